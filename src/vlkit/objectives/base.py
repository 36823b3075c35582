"""What every contrastive objective shares: the registry, the base class, logit-scale helpers.

An objective works on feature tensors only (it never imports the model layer):

    forward(image_features, text_features, logit_scale, logit_bias=None, **extra) -> dict

``image_features`` and ``text_features`` are L2-normalised ``(B, D)`` rows of the *local* batch
(the objective gathers across ranks itself when it needs to). ``logit_scale`` is the log-space
parameter; the objective takes ``.exp()``. Every returned key that is a loss ends in ``_loss``.
``**extra`` carries what only some objectives need (``progress`` in [0, 1], token features,
momentum features); an objective ignores the keys it does not use.

Each objective class carries what the model layer and the engine need to know about it:
``Config`` (its dataclass), ``init_logit_scale`` / ``init_logit_bias`` (paper initial values; a
bias of ``None`` means the objective uses none), ``logit_scale_range`` (the clamp the engine
applies after each optimizer step) and ``requires`` (the ``**extra`` keys it cannot run without).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry

OBJECTIVES: Registry[type["Objective"]] = Registry("objective")

# Initial values from the papers (the model layer reads these when it builds the parameters).
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP: temperature 0.07
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)  # SigLIP: t' = log 10
SIGLIP_INIT_LOGIT_BIAS = -10.0  # SigLIP: b = -10
SAIL_INIT_LOGIT_SCALE = math.log(20.0)  # SAIL: logit scale 20
SAIL_INIT_LOGIT_BIAS = -10.0  # SAIL: bias -10
LN_100 = math.log(100.0)  # CLIP/open_clip clamp the scale to at most 100


@dataclasses.dataclass
class NoOptions:
    """Config of an objective that has no options of its own."""


class Objective(nn.Module):
    """Base class: stores the config and documents the contract (see the module docstring)."""

    Config: ClassVar[type] = NoOptions
    init_logit_scale: ClassVar[float] = CLIP_INIT_LOGIT_SCALE
    init_logit_bias: ClassVar[float | None] = None
    logit_scale_range: ClassVar[tuple[float, float]] = (0.0, LN_100)
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg if cfg is not None else self.Config()

    @property
    def name(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__)

    def check_extra(self, extra: dict) -> None:
        """Fail with one line when the engine did not pass what this objective needs."""
        missing = [k for k in self.requires if extra.get(k) is None]
        if missing:
            raise UserError(
                f"objective {self.name!r} needs {', '.join(missing)} in its inputs; "
                "use a training task that provides them (e.g. a momentum model for albef_itc)"
            )


def register(name: str):
    """Register an objective class under ``name`` (and remember the name on the class)."""

    def deco(cls):
        cls.registry_name = name
        OBJECTIVES.add(name, cls)
        return cls

    return deco


def clamp_logit_scale(model_or_param, max: float = LN_100, min: float = 0.0) -> bool:  # noqa: A002
    """Clamp a log-space ``logit_scale`` in place to ``[min, max]`` (the engine calls this after
    every optimizer step, as CLIP and open_clip do: scale at most 100 by default).

    Accepts the parameter itself or a module with a ``logit_scale`` attribute. Returns False (and
    does nothing) for a module without one, so the engine can call it on any model.
    """
    param = model_or_param
    if isinstance(model_or_param, nn.Module):
        param = getattr(model_or_param, "logit_scale", None)
        if param is None:
            return False
    if not isinstance(param, torch.Tensor):
        return False
    with torch.no_grad():
        param.clamp_(min, max)
    return True


def symmetric_cross_entropy(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor,
                            targets_image: torch.Tensor, targets_text: torch.Tensor):
    """(CE(image rows) + CE(text rows)) / 2 with soft targets (rows sum to one)."""
    loss_i = -(targets_image * logits_per_image.log_softmax(dim=-1)).sum(dim=-1).mean()
    loss_t = -(targets_text * logits_per_text.log_softmax(dim=-1)).sum(dim=-1).mean()
    return (loss_i + loss_t) / 2
