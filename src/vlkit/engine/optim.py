"""Optimizers: AdamW, Lion, Muon and SGD with the weight-decay exclusions CLIP training uses.

:func:`build_optimizer` splits the trainable parameters into two groups: with weight decay, and
without it for parameters where decay only hurts (open_clip's rule): 1-D and 0-D tensors (biases,
norm gains), the ``logit_scale`` / ``logit_bias`` temperature parameters, and any names the model
lists in ``no_weight_decay()`` (positional embeddings, class tokens, ...). Frozen parameters
(``requires_grad=False``) are left out. Each group carries a ``"group"`` label and the
``"param_names"`` it holds, so a checkpoint shows what was decayed.

Defaults per optimizer (used where the config leaves a field ``None``):

- ``adamw``: lr 5e-4, wd 0.2, betas (0.9, 0.98), eps 1e-6 (open_clip's CLIP recipe); torch's
  fused implementation wherever the parameters allow it (``fused: null``; the same update up to
  float rounding, several times faster than the per-op version on a CPU).
- ``lion``: lr 1e-4, wd 1.0, betas (0.9, 0.99). The Lion paper advises an lr 3-10x smaller and a
  wd 3-10x larger than AdamW's, keeping lr * wd about equal: 5x each way here (lr * wd = 1e-4,
  as AdamW's). SAIL's recipe is lr 1e-5, wd 1e-4.
- ``muon``: lr 1e-3, wd 0.1, momentum 0.95 (Nesterov); betas (0.9, 0.98), eps 1e-6 for the
  parameters it steps as AdamW. Its update is scaled to a typical AdamW update's RMS (0.2), so
  AdamW's lr carries over.
- ``sgd``: lr 1e-2, wd 5e-4, momentum 0.9 (Dassl/CoOp use SGD, lr 2e-3, wd 5e-4).

:class:`Lion`: "Symbolic Discovery of Optimization Algorithms" (Chen et al., arXiv 2302.06675),
timm's implementation (``timm.optim.Lion``) with vlkit's argument checks.

:class:`Muon`: Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks"
(kellerjordan.github.io/posts/muon), with the weight decay and the update scale of Liu et al.
2025, "Muon is Scalable for LLM Training" (arXiv 2502.16982). Muon steps the weight matrices and
convolution filters that take weight decay; embedding tables, every parameter of the no-decay
group (biases, norms, temperatures, positional embeddings) and tensors with a size-1 leading
dimension (depthwise conv filters (C, 1, kh, kw), (1, n, D) tokens: timm's rule) step as AdamW,
as both papers do. Deviations: a conv filter is orthogonalized as its (out, in * kh * kw) matrix
(Jordan's CIFAR-10 speedruns do the same; the LLM papers have no convolutions), the projection
heads are stepped by Muon like any hidden matrix, and Newton-Schulz runs in fp32 (the reference
uses bf16, which CPUs without bf16 units emulate slowly).

Why vlkit keeps its own Muon rather than ``timm.optim.Muon`` (timm 1.0.31): timm runs
Newton-Schulz in bf16 with no option to change it (``muon()`` calls
``zeropower_via_newtonschulz`` at its bf16 default). On a CPU without AVX512_BF16/AMX that is
emulated: one step over the throughput benchmark's 48 ViT matrices took 56 s with timm against
1.7 s here (32x; median of 3 alternating rounds on a shared AMD EPYC, AVX2, torch 2.14.1, one
thread; a first, sequential run gave 75.6 s against 1.15 s, 66x), measured by
``OMP_NUM_THREADS=1 python benchmarks/muon_step.py``. timm's ``nesterov=True`` also swaps the
AdamW part for NAdamW. ``torch.optim.Muon`` takes 2-D parameters only and no AdamW part. The
update matches timm's with ``nesterov=True, ns_coefficients="original"`` up to bf16 rounding
(tests/engine/test_optim_peers.py).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry

__all__ = ["OptimConfig", "Lion", "Muon", "orthogonalize", "OPTIMIZERS", "build_optimizer",
           "param_groups", "muon_groups", "resolve", "clip_grad_norm"]


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | lion | muon | sgd
    lr: float | None = None  # None: the optimizer's default (module docstring)
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None  # adamw, lion, muon (its AdamW part)
    eps: float = 1e-6  # adamw, muon (its AdamW part)
    momentum: float | None = None  # sgd (default 0.9), muon (default 0.95)
    fused: bool | None = None  # adamw: torch's fused kernel; None: where the parameters allow it


def _closure_loss(closure):
    """torch's optimizer convention: a given closure recomputes the loss before the step."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check_lion_args(lr: float, betas, weight_decay: float) -> None:
    if lr <= 0:
        raise UserError(f"Lion lr must be > 0, got {lr}")
    if not all(0.0 <= b < 1.0 for b in betas):
        raise UserError(f"Lion betas must be in [0, 1), got {betas}; the paper uses (0.9, 0.99)")
    if weight_decay < 0:
        raise UserError(f"Lion weight_decay must be >= 0, got {weight_decay}")


@functools.cache
def _lion_class() -> type:
    """timm's Lion with vlkit's one-line argument errors. Built at first use: importing timm
    takes seconds, and most runs never ask for Lion."""
    from timm.optim import Lion as TimmLion

    class Lion(TimmLion):
        """timm's Lion (``timm.optim.Lion``): sign of an interpolated momentum, decoupled weight
        decay, one state buffer (``exp_avg``). Per step, for gradient g and momentum m (zeros at
        first):
            c = b1 * m + (1 - b1) * g
            w <- w * (1 - lr * wd) - lr * sign(c)
            m <- b2 * m + (1 - b2) * g
        timm's options (``caution``, ``corrected_weight_decay``, ``foreach``) keep its defaults.
        """

        def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                     weight_decay: float = 0.0):
            _check_lion_args(lr, betas, weight_decay)
            super().__init__(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    Lion.__module__ = __name__
    Lion.__qualname__ = "Lion"
    return Lion


def __getattr__(name: str):
    if name == "Lion":  # ``from vlkit.engine.optim import Lion``, without importing timm up front
        return _lion_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan's quintic Newton-Schulz iteration


def orthogonalize(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T for ``matrix`` = U S V^T (2-D), by Muon's Newton-Schulz iteration, in fp32.

    The iteration maps every singular value into roughly [0.7, 1.2] rather than exactly 1, which
    Jordan reports trains as well as the exact U V^T.
    """
    a, b, c = _NS_COEFFICIENTS
    x = matrix.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's range
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for the groups marked ``muon=True``, AdamW for the others (see the module docstring).

    Per step, for a Muon parameter W of shape (out, ...) with gradient g and momentum m (zeros
    at first):
        m <- mu * m + (1 - mu) * g;    u = (1 - mu) * g + mu * m          (Nesterov)
        O = orthogonalize(u as an (out, rest) matrix) * 0.2 * sqrt(max(out, rest))
        W <- W * (1 - lr * wd) - lr * O
    0.2 * sqrt(max(out, rest)) gives O an RMS of about 0.2, that of a typical AdamW update (Liu
    et al. 2025), so the two kinds of group share one lr and one schedule. Other groups take torch's AdamW update.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.0, ns_steps: int = 5):
        if lr <= 0:
            raise UserError(f"Muon lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"Muon momentum must be in [0, 1), got {momentum}; the paper uses 0.95")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise UserError(f"Muon betas (its AdamW part) must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, momentum=momentum, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, ns_steps=ns_steps, muon=False))
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise UserError("Muon steps matrices and conv filters only; put 1-D parameters "
                                "in a group with muon=False")

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["muon"]:
                    update = self._muon_update(p, group)
                else:
                    update = self._adamw_update(p, group)
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr)
        return loss

    def _muon_update(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        state, mu = self.state[p], group["momentum"]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        m = state["momentum_buffer"].lerp_(p.grad, 1 - mu)
        u = p.grad.lerp(m, mu).reshape(p.shape[0], -1)
        return orthogonalize(u, group["ns_steps"]).mul_(0.2 * max(u.shape) ** 0.5).view_as(p)

    def _adamw_update(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        state, (beta1, beta2) = self.state[p], group["betas"]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t, g = state["step"], p.grad
        state["exp_avg"].lerp_(g, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
        return (state["exp_avg"] / (1 - beta1 ** t)).div_(denom)


OPTIMIZERS: Registry = Registry("optimizer")
_DEFAULTS = {
    "adamw": dict(lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98)),
    "lion": dict(lr=1e-4, weight_decay=1.0, betas=(0.9, 0.99)),
    "muon": dict(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), momentum=0.95),
    "sgd": dict(lr=1e-2, weight_decay=5e-4, betas=None, momentum=0.9),
}


def _fusable(groups) -> bool:
    """torch's fused AdamW takes floating-point tensors on CPU or CUDA, all on one device type."""
    params = [p for g in groups for p in g["params"]]
    kinds = {p.device.type for p in params}
    return len(kinds) == 1 and kinds <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


@OPTIMIZERS.register("adamw")
def _adamw(groups, cfg: OptimConfig):
    # The fused kernel makes one pass over each tensor instead of one per elementwise op, so a
    # large tensor (a 12.6M-parameter token embedding in the throughput benchmark) costs far less
    fused = _fusable(groups) if cfg.fused is None else bool(cfg.fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             **({"fused": True} if fused else {}))


@OPTIMIZERS.register("lion")
def _lion(groups, cfg: OptimConfig):
    return _lion_class()(groups, lr=cfg.lr, betas=tuple(cfg.betas))


@OPTIMIZERS.register("muon")
def _muon(groups, cfg: OptimConfig):
    return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, betas=tuple(cfg.betas), eps=cfg.eps)


@OPTIMIZERS.register("sgd")
def _sgd(groups, cfg: OptimConfig):
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def resolve(cfg: OptimConfig) -> OptimConfig:
    """Fill the ``None`` fields with the optimizer's defaults (write this one next to a run)."""
    OPTIMIZERS.get(cfg.name)  # unknown name: UserError listing the valid ones
    defaults = _DEFAULTS[cfg.name]
    filled = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.lr is None or cfg.lr <= 0:
        raise UserError(f"optimizer lr must be > 0, got {cfg.lr}; set optim.lr")
    if cfg.weight_decay < 0:
        raise UserError(f"optimizer weight_decay must be >= 0, got {cfg.weight_decay}")
    return cfg


def _no_decay(name: str, param: torch.Tensor, excluded: set[str]) -> bool:
    if param.ndim < 2 or "logit_scale" in name or "logit_bias" in name:
        return True
    return any(name == e or name.startswith(e + ".") or name.endswith("." + e) for e in excluded)


def param_groups(model_or_named, weight_decay: float, no_weight_decay: Iterable[str] = ()):
    """Two param groups (decay / no decay) of the trainable parameters; see module docstring.

    ``model_or_named`` is an ``nn.Module`` (its ``no_weight_decay()`` names, if it has that
    method, are excluded too) or an iterable of ``(name, parameter)``.
    """
    excluded = set(no_weight_decay)
    if isinstance(model_or_named, nn.Module):
        if hasattr(model_or_named, "no_weight_decay"):
            excluded |= set(model_or_named.no_weight_decay())
        named = list(model_or_named.named_parameters())
    else:
        named = list(model_or_named)
    decay, no_decay = ([], []), ([], [])
    for name, p in named:
        if not p.requires_grad:
            continue
        names, params = no_decay if _no_decay(name, p, excluded) else decay
        names.append(name)
        params.append(p)
    if not decay[1] and not no_decay[1]:
        raise UserError("no trainable parameters to optimize; unfreeze something (requires_grad)")
    groups = []
    for label, (names, params), wd in (("decay", decay, weight_decay),
                                       ("no_decay", no_decay, 0.0)):
        if params:
            groups.append({"params": params, "weight_decay": wd, "group": label,
                           "param_names": names})
    return groups


def _muon_shaped(p: torch.Tensor) -> bool:
    """A matrix or conv filter whose first two sizes exceed 1: a depthwise filter (C, 1, k, k)
    or a (1, n, D) token table has no matrix to orthogonalize (timm routes them to AdamW too)."""
    return p.ndim >= 2 and p.shape[0] > 1 and p.shape[1] > 1


def muon_groups(groups: list[dict], embeddings: Iterable[str] = ()) -> list[dict]:
    """Split :func:`param_groups`' output for :class:`Muon`: the decay group's matrices and conv
    filters (not the ``embeddings`` named, not those with a size-1 leading dimension) form the
    ``"muon"`` group; the rest step as AdamW."""
    embeddings = set(embeddings)
    out = []
    for g in groups:
        named = list(zip(g["param_names"], g["params"]))
        is_muon = [g["group"] == "decay" and _muon_shaped(p) and n not in embeddings
                   for n, p in named]
        for flag, label in ((True, "muon"), (False, g["group"])):
            part = [(n, p) for (n, p), m in zip(named, is_muon) if m == flag]
            if part:
                out.append({**g, "params": [p for _, p in part],
                            "param_names": [n for n, _ in part], "group": label, "muon": flag})
    return out


def build_optimizer(model_or_named, cfg: OptimConfig | None = None,
                    no_weight_decay: Iterable[str] = ()) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters, decay groups split as described above."""
    cfg = resolve(cfg or OptimConfig())
    groups = param_groups(model_or_named, cfg.weight_decay, no_weight_decay)
    if cfg.name == "muon":
        embeddings = ()
        if isinstance(model_or_named, nn.Module):
            embeddings = [f"{name}.weight" if name else "weight"
                          for name, mod in model_or_named.named_modules()
                          if isinstance(mod, nn.Embedding)]
        groups = muon_groups(groups, embeddings)
    return OPTIMIZERS.get(cfg.name)(groups, cfg)


def clip_grad_norm(parameters_or_model, max_norm: float | None, norm_type: float = 2.0) -> float:
    """Clip the total gradient norm to ``max_norm`` (skip when None or <= 0); return the norm
    before clipping (for logging; a non-finite value means the step has inf/nan gradients)."""
    params = parameters_or_model
    if isinstance(params, nn.Module):
        params = params.parameters()
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    limit = float("inf") if not max_norm or max_norm <= 0 else float(max_norm)
    return float(torch.nn.utils.clip_grad_norm_(grads, limit, norm_type=norm_type))
