"""The metaplastic binarized network of Laborieux et al. (Nat. Commun. 2021): the BNN baseline of the paper.

Software only (``--model bnn --chip none``). Followed from their published code
(github.com/Laborieux-Axel/SynapticMetaplasticityBNN, ``Continual_Learning_Fig-2abcdefgh-3abcd-5cde``:
``models_utils.py`` classes ``BNN``, ``Adam_meta``, ``SignActivation``; ``main.py``):

- Weights used in the forward pass are sign(W_H) (straight-through: the gradient with respect to the binary
  weight is applied to the hidden weight W_H). No clamp on W_H.
- Hidden activations are binarized too: sign(x), with the gradient passed where |x| <= 1 (``SignActivation``).
  The input layer sees the (real-valued) pixels; the last layer's BN output is the logits.
- ``BatchNorm1d(affine=True, track_running_stats=False)`` after every layer; their "task" scenario keeps one
  BN state per task: a new task *starts from the current BN state* (they keep training the same BN and save
  a copy at the end of each task), and an old task is tested with the BN state saved at its end.
- Initialisation: uniform on [-0.05, 0.05] (their ``--init uniform --init-width 0.1`` defaults).
- ``AdamMeta``: their ``Adam_meta``. With m_t, v_t Adam's moments (not bias-corrected):
      step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
      consolidate = sign(W_H) * m_t > 0      (the step -step_size * m_t / ... would shrink |W_H|)
      m'  = (1 - tanh^2(meta * |W_H|)) * m_t   where consolidate, else m_t
      W_H <- W_H - step_size * m' / (sqrt(v_t) + eps)
  Other parameters (BN, 1-D) get the same Adam step without the factor. Weight decay (their ``--decay``,
  1e-7 in the MNIST-FMNIST command) is added to the gradient of every parameter before the moments.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hwloop.training.adamstate import adam_step
from hwloop.training.bnn_defaults import BNN_INIT_HALF_WIDTH, BNN_LR, BNN_META, BNN_WEIGHT_DECAY
from hwloop.training.fused_bnn import adam_meta
from hwloop.training.fused_cpu import Runner
from hwloop.training.model import HiddenLinear, LayeredMLP


class SignSTE(torch.autograd.Function):
    """sign(x) forward; backward passes the gradient where |x| <= 1 (hardtanh's derivative)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.sign()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1.0).to(grad.dtype)


class SignWeightSTE(torch.autograd.Function):
    """Forward: the binary weights ``w_bin`` = sign(W_H); backward: the gradient with respect to them goes
    to W_H unchanged (the straight-through estimator). No copy either way. ``W + (sign(W) - W).detach()``,
    the usual idiom, gives the same values and gradients with three weight-sized temporaries per forward: a
    third of an H 4096 training step on this project's machine (py-spy)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, w_bin: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return w_bin.view_as(w_bin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def binary_weights(w: torch.Tensor) -> torch.Tensor:
    """sign(``w``), kept on ``w`` (``_hw_sign``) with the storage address and version it was made from.

    ``AdamMeta``'s compiled step writes the new signs in the pass that updates W_H and records the version
    it leaves, so a training forward reads them instead of making them again (a pass over the weights). Any
    other change of W_H (an eager step, a checkpoint loaded, an initialisation) changes its version, and a
    copy has another address: the signs are then made afresh. ``tests/test_bnn.py`` checks that training
    with and without this cache gives bit-identical weights."""
    key = (w.data_ptr(), w._version)
    cache = getattr(w, "_hw_sign", None)
    if cache is None or getattr(w, "_hw_sign_key", None) != key or cache.shape != w.shape:
        cache = w.detach().sign()
        w._hw_sign = cache  # type: ignore[attr-defined]
        w._hw_sign_key = key  # type: ignore[attr-defined]
    return cache


class BinaryLinear(HiddenLinear):
    """Linear layer without bias whose forward uses sign(W_H), the gradient going straight to W_H."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, SignWeightSTE.apply(self.weight, binary_weights(self.weight)))


class BinaryMLP(LayeredMLP):
    """784-H-H-10 BNN: BinaryLinear -> BN -> sign, with one BN state per task (their "task" scenario)."""

    activation = staticmethod(SignSTE.apply)

    def __init__(self, hidden: int = 4096, n_in: int = 784, n_out: int = 10, n_tasks: int = 1) -> None:
        super().__init__()
        self.bn_mode = "per-task"
        self.layers = nn.ModuleList(
            [BinaryLinear(n_in, hidden), BinaryLinear(hidden, hidden), BinaryLinear(hidden, n_out)]
        )
        self.bns = nn.ModuleList(
            nn.ModuleList(
                nn.BatchNorm1d(layer.out_features, affine=True, track_running_stats=False) for layer in self.layers
            )
            for _ in range(n_tasks)
        )
        self.register_buffer("last_task", torch.zeros((), dtype=torch.int64))  # newest task entered
        self.task = 0

    def init_uniform(self, gen: torch.Generator, half_width: float = BNN_INIT_HALF_WIDTH) -> None:
        with torch.no_grad():
            for w in self.hidden_weights():
                w.uniform_(-half_width, half_width, generator=gen)

    @torch.no_grad()
    def set_task(self, task: int) -> None:
        """Select the BN state of ``task``; entering a new task copies the current task's BN state into it."""
        newest = int(self.last_task)
        if task > newest:
            for t in range(newest + 1, task + 1):
                for dst, src in zip(self.bns[t], self.bns[newest], strict=True):
                    dst.load_state_dict(src.state_dict())
            self.last_task.fill_(task)
        self.task = task


#: the compiled step's threads, one pool per process (as ``MetaplasticAdam``'s)
_RUNNER = Runner()


def _fusable(p: torch.Tensor, state: dict) -> bool:
    """Whether the compiled step can run on ``p`` in place: float32, on the CPU, contiguous, as its grad and
    moments (it shares their memory with numpy)."""
    ts = (p, p.grad, state["exp_avg"], state["exp_avg_sq"])
    return all(x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() for x in ts)


class AdamMeta(torch.optim.Optimizer):
    """Laborieux et al.'s ``Adam_meta``: Adam whose steps toward a sign flip are scaled by 1 - tanh²(meta·|W_H|).

    ``meta`` may be changed between steps (attribute ``m_star``, as ``MetaplasticAdam``, so the trainer's
    warm-up applies). Parameters flagged ``metaplastic`` get the factor; the others plain Adam.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = BNN_LR,
        meta: float = BNN_META,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = BNN_WEIGHT_DECAY,
        fused: bool = True,
    ) -> None:
        if not lr > 0:
            raise ValueError("learning rate must be positive")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.m_star = float(meta)
        #: float32 CPU tensors take the compiled step (``fused_bnn``); others, and ``fused=False``, the loop
        self.fused = fused
        self.attenuated = 0  # weights whose step was scaled in the last step (diagnostic)
        self.fused_tensors = 0  # tensors the last step did in the compiled pass (diagnostic)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.attenuated = 0
        self.fused_tensors = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = adam_step(state, p)
                if self.fused and _fusable(p, state):
                    self._fused_step(p, state, group, t)
                    continue
                grad = p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = v.sqrt().add_(group["eps"])
                step_size = group["lr"] * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
                if getattr(p, "metaplastic", False) and self.m_star != 0:
                    consolidate = torch.sign(p) * m > 0
                    factor = 1 - torch.tanh(self.m_star * p.abs()) ** 2
                    m_used = torch.where(consolidate, factor * m, m)
                    self.attenuated += int(consolidate.sum())
                else:
                    m_used = m
                p.addcdiv_(m_used, denom, value=-step_size)
        return loss

    def _fused_step(self, p: torch.Tensor, state: dict, group: dict, t: int) -> None:
        """The same step as the loop above in one compiled pass (``fused_bnn.adam_meta``)."""
        beta1, beta2 = group["betas"]
        meta = self.m_star if getattr(p, "metaplastic", False) else 0.0
        scal = np.array(
            [
                beta1,
                beta2,
                group["eps"],
                group["lr"] * (1 - beta2**t) ** 0.5 / (1 - beta1**t),
                meta,
                group["weight_decay"],
            ],
            dtype=np.float32,
        )
        sign = binary_weights(p)  # the cache this pass overwrites (made here before p's first forward)
        args = (
            p.data.view(-1).numpy(),
            p.grad.reshape(-1).numpy(),
            state["exp_avg"].view(-1).numpy(),
            state["exp_avg_sq"].view(-1).numpy(),
            sign.view(-1).numpy(),
            scal,
        )
        results, _ = _RUNNER.map(adam_meta, torch.get_num_threads(), p.numel(), args)
        # W_H and its signs changed behind torch's back (numpy): say so (a graph that saved the old signs now
        # refuses a second backward instead of using the new ones), then mark the signs as made from p's version
        torch.autograd.graph.increment_version(p)
        torch.autograd.graph.increment_version(sign)
        p._hw_sign_key = (p.data_ptr(), p._version)  # type: ignore[attr-defined]
        self.attenuated += int(sum(results))
        self.fused_tensors += 1


def binary_weight_count(n_in: int, hidden: int, n_out: int) -> int:
    """Binary weights of a 784-H-H-10 BNN (one 1T1R device each, two in 2T2R)."""
    return n_in * hidden + hidden * hidden + hidden * n_out
