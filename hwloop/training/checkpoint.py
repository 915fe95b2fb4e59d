"""The checkpoint of a training run: what ``--resume`` restores, stored in the run log (``/checkpoints``).

A checkpoint is a ``torch.save`` of one dict (the *payload*):

- ``model``: the model's state dict without the ``w_used`` buffers (they are the chip's weights, rebuilt
  from ``hw``); ``opt``: the optimizer's state dict
- ``hw``: ``ChipWeights.state(weights=False)`` and ``chip``: ``Chip.snapshot()`` (None without a chip), each
  with its constant arrays compacted (``compact_state``) and, when serialised, its integer and boolean
  arrays deflated (``deflate_state``)
- ``step``, ``epoch`` (global epochs finished), ``acc_after_task``, ``form_yield``, ``hwloop_version``

The BNN baseline stores ``model`` (whole), ``opt``, ``step``, ``epoch``, ``acc_after_task``,
``hwloop_version`` and ``saved_unix``. The format is documented in ``docs/runlog-schema.md``.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np
import torch

from hwloop import __version__


def compact_state(d: dict) -> dict:
    """A state dict with every constant array (all elements equal, e.g. a relaxation clock that never ran)
    replaced by a small marker; ``expand_state`` restores it exactly."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray) and v.size > 1 and v.dtype.kind in "biuf" and (v == v.flat[0]).all():
            out[k] = {"__constant__": v.flat[0].item(), "shape": v.shape, "dtype": v.dtype.str}
        else:
            out[k] = v
    return out


#: integer and boolean arrays at least this large are deflated in a checkpoint (``deflate_state``)
DEFLATE_MIN_BYTES = 1 << 12


def deflate_state(d: dict | None) -> dict | None:
    """``d`` for ``torch.save``: each integer or boolean array (levels, counters, flags: they deflate 5 to
    70 times) as a marker ``{"__zlib__": bytes, "shape", "dtype"}``; each float array (conductances,
    budgets: they deflate by 10 % at 45 MB/s, a second of CPU per epoch taken from training on two
    cores) raw, as ``{"__array__": tensor}`` (``torch.save`` writes a tensor 10 times faster than it
    pickles a numpy array)."""
    if d is None:
        return None
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray) and v.dtype.kind in "biu" and v.nbytes >= DEFLATE_MIN_BYTES:
            v = np.ascontiguousarray(v)
            out[k] = {"__zlib__": zlib.compress(v.tobytes(), 1), "shape": v.shape, "dtype": v.dtype.str}
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.isnative and v.nbytes >= DEFLATE_MIN_BYTES:
            out[k] = {"__array__": torch.from_numpy(np.ascontiguousarray(v))}
        else:
            out[k] = v
    return out


def _expand(v: object) -> object:
    if isinstance(v, dict) and "__constant__" in v:
        return np.full(v["shape"], v["__constant__"], dtype=np.dtype(v["dtype"]))
    if isinstance(v, dict) and "__array__" in v:
        return v["__array__"].cpu().numpy()  # a map_location may have put it on a device
    if isinstance(v, dict) and "__zlib__" in v:
        return np.frombuffer(zlib.decompress(v["__zlib__"]), dtype=np.dtype(v["dtype"])).reshape(v["shape"]).copy()
    return v


def expand_state(d: dict | None) -> dict | None:
    """Undo ``compact_state`` and ``deflate_state``."""
    if d is None:
        return None
    return {k: _expand(v) for k, v in d.items()}


def host_copy(obj: object) -> object:
    """A deep copy on the host of tensors/arrays in nested dicts and lists (for off-thread checkpointing)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(host_copy(v) for v in obj)
    return obj


def build_payload(
    *,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    hw_state: dict,
    chip_state: dict | None,
    step: int,
    epoch: int,
    acc_after_task: dict,
    form_yield: float,
) -> dict:
    """The payload of a QNN run's checkpoint, as host copies taken now (the next epoch may change the
    originals while the payload is serialised off the training thread)."""
    model_sd = {k: v for k, v in model.state_dict().items() if not k.endswith("w_used")}  # = hw weights
    payload = host_copy(
        {
            "model": model_sd,
            "opt": opt.state_dict(),
            "hw": compact_state(hw_state),
            "chip": compact_state(chip_state) if chip_state is not None else None,
            "step": step,
            "epoch": epoch,
            "acc_after_task": acc_after_task,
            "form_yield": form_yield,
            "hwloop_version": __version__,
        }
    )
    assert isinstance(payload, dict)
    return payload


def serialise(payload: dict) -> bytes:
    """``torch.save`` of the payload, its ``hw`` and ``chip`` states deflated (``deflate_state``); runs
    off the training thread."""
    packed = {k: deflate_state(v) if k in ("hw", "chip") else v for k, v in payload.items()}
    buf = io.BytesIO()
    torch.save(packed, buf)
    return buf.getvalue()


def load_payload(blob: bytes, map_location: Any = "cpu") -> dict:
    """A checkpoint's payload, with ``hw`` and ``chip`` expanded (``expand_state``) when present."""
    ck = torch.load(io.BytesIO(blob), weights_only=False, map_location=map_location)
    for key in ("hw", "chip"):
        if key in ck:
            ck[key] = expand_state(ck[key])
    return ck


__all__ = ["build_payload", "compact_state", "deflate_state", "expand_state", "host_copy", "load_payload", "serialise"]
