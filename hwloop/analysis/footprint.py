"""Device count and memory footprint (the paper's Table I).

A QNN weight is a differential pair of 1T1R cells (2 devices per weight, "2T2R"); a device holds one of
``n_hcs + 1`` levels, so a weight takes ``2 * n_hcs + 1`` levels (17 for the paper's chip). The reference is
the paper's binarized network of the same accuracy: two hidden layers of 4096 neurons on 784 inputs and
10 outputs, i.e. about 20 M binary weights, stored as 20 M devices in 1T1R or 40 M devices in 2T2R.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

BNN_HIDDEN = (4096, 4096)
MNIST_INPUTS = 784
MNIST_CLASSES = 10
#: the paper's Table I accuracies of that BNN (quoted from the paper, not measured here)
BNN_PAPER_ACC_PCT = {"MNIST": 96.5, "F-MNIST": 87.0}
DEVICES_PER_WEIGHT_QNN = 2
#: the paper's Table I, QNN hardware implementation (mean ± std, %), by hidden width of 784-H-H-10:
#: 537 k devices = H 256, 1.3 M = H 512, 3.7 M = H 1024 (quoted from the paper, not measured here)
PAPER_QNN_ACC_PCT: dict[int, dict[str, tuple[float, float]]] = {
    256: {"MNIST": (97.02, 0.40), "F-MNIST": (84.87, 0.53)},
    512: {"MNIST": (97.47, 0.33), "F-MNIST": (86.09, 0.33)},
    1024: {"MNIST": (97.17, 0.64), "F-MNIST": (87.25, 0.35)},
}


def mlp_weights(n_in: int, hidden: list[int], n_out: int) -> int:
    sizes = [n_in, *hidden, n_out]
    return sum(a * b for a, b in itertools.pairwise(sizes))


BNN_WEIGHTS = mlp_weights(MNIST_INPUTS, list(BNN_HIDDEN), MNIST_CLASSES)


@dataclass
class Architecture:
    n_in: int | None
    hidden: list[int]
    n_out: int | None
    source: str

    @property
    def weights(self) -> int | None:
        if self.n_in is None or self.n_out is None or not self.hidden:
            return None
        return mlp_weights(self.n_in, self.hidden, self.n_out)

    @property
    def devices(self) -> int | None:
        w = self.weights
        return None if w is None else DEVICES_PER_WEIGHT_QNN * w

    def describe(self) -> str:
        if self.weights is None:
            return "unknown"
        return "-".join(str(x) for x in [self.n_in, *self.hidden, self.n_out])


def architecture(config: dict, tasks: list[str]) -> Architecture:
    """The run's MLP from its configuration: ``hidden`` (int = two hidden layers of that width, as in the
    paper, unless ``hidden_layers``/``n_hidden`` says how many; or a list of widths). Inputs and outputs
    from ``input_size``/``n_classes`` if given, else 784 and 10 for the MNIST family of tasks."""
    h = config.get("hidden")
    n_layers = config.get("hidden_layers", config.get("n_hidden", 2))
    hidden: list[int] = []
    if isinstance(h, int):
        hidden = [h] * int(n_layers if isinstance(n_layers, int) else 2)
    elif isinstance(h, (list, tuple)) and all(isinstance(x, int) for x in h):
        hidden = list(h)
    elif isinstance(h, str):
        try:
            hidden = [int(x) for x in h.replace("x", ",").split(",") if x.strip()]
        except ValueError:
            hidden = []
    mnist_family = bool(tasks) and all("mnist" in t.lower() for t in tasks)
    n_in = config.get("input_size", MNIST_INPUTS if mnist_family else None)
    n_out = config.get("n_classes", MNIST_CLASSES if mnist_family else None)
    src = "configuration (hidden)" + ("; 784 inputs, 10 classes (MNIST family)" if mnist_family else "")
    return Architecture(n_in=n_in, hidden=hidden, n_out=n_out, source=src)


def paper_qnn_accuracy(arch: Architecture) -> dict[str, tuple[float, float]] | None:
    """The paper's Table I accuracies for a QNN of the same size (784-H-H-10 with H in 256, 512, 1024), or
    None when the paper has no network of that shape."""
    h = arch.hidden
    if arch.n_in != MNIST_INPUTS or arch.n_out != MNIST_CLASSES or len(h) != 2 or h[0] != h[1]:
        return None
    return PAPER_QNN_ACC_PCT.get(h[0])


def footprint(arch: Architecture) -> dict:
    """Devices of the QNN and the reduction versus the BNN reference in 1T1R and 2T2R."""
    dev = arch.devices
    out = {
        "architecture": arch.describe(),
        "weights": arch.weights,
        "devices": dev,
        "bnn_weights": BNN_WEIGHTS,
        "bnn_devices_1t1r": BNN_WEIGHTS,
        "bnn_devices_2t2r": 2 * BNN_WEIGHTS,
    }
    out["reduction_vs_1t1r"] = None if not dev else BNN_WEIGHTS / dev
    out["reduction_vs_2t2r"] = None if not dev else 2 * BNN_WEIGHTS / dev
    return out


def fmt_count(n: int | None) -> str:
    """20 M, 1.3 M, 537 k: the paper's way of writing device counts."""
    if n is None:
        return "?"
    if n >= 1e6:
        v = n / 1e6
        return f"{v:.1f} M" if v < 10 else f"{v:.0f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return str(n)
