"""Optimizers: AdamW, Lion and SGD with the weight-decay exclusions CLIP training uses.

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
- ``sgd``: lr 1e-2, wd 5e-4, momentum 0.9 (Dassl/CoOp use SGD, lr 2e-3, wd 5e-4).

:class:`Lion`: "Symbolic Discovery of Optimization Algorithms" (Chen et al., arXiv 2302.06675).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry

__all__ = ["OptimConfig", "Lion", "OPTIMIZERS", "build_optimizer", "param_groups",
           "resolve", "clip_grad_norm"]


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | lion | sgd
    lr: float | None = None  # None: the optimizer's default (module docstring)
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None  # adamw, lion
    eps: float = 1e-6  # adamw
    momentum: float = 0.9  # sgd
    fused: bool | None = None  # adamw: torch's fused kernel; None: where the parameters allow it


class Lion(torch.optim.Optimizer):
    """Lion: sign of an interpolated momentum, with decoupled weight decay. One state buffer.

    Per step, for gradient g and momentum m (zeros at first):
        c = b1 * m + (1 - b1) * g
        w <- w * (1 - lr * wd) - lr * sign(c)      (= w - lr * (sign(c) + wd * w))
        m <- b2 * m + (1 - b2) * g
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if lr <= 0:
            raise UserError(f"Lion lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise UserError(f"Lion betas must be in [0, 1), got {betas}; the paper uses "
                            "(0.9, 0.99)")
        if weight_decay < 0:
            raise UserError(f"Lion weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (m * beta1).add_(grad, alpha=1 - beta1).sign_()  # sign(c)
                if wd != 0:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(grad, alpha=1 - beta2)
        return loss


OPTIMIZERS: Registry = Registry("optimizer")
_DEFAULTS = {
    "adamw": dict(lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98)),
    "lion": dict(lr=1e-4, weight_decay=1.0, betas=(0.9, 0.99)),
    "sgd": dict(lr=1e-2, weight_decay=5e-4, betas=None),
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
    return Lion(groups, lr=cfg.lr, betas=tuple(cfg.betas))


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


def build_optimizer(model_or_named, cfg: OptimConfig | None = None,
                    no_weight_decay: Iterable[str] = ()) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters, decay groups split as described above."""
    cfg = resolve(cfg or OptimConfig())
    groups = param_groups(model_or_named, cfg.weight_decay, no_weight_decay)
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
