"""Contrastive objectives on feature tensors (no dependency on the model layer).

Registered names (:data:`OBJECTIVES`): ``clip`` (CLIP/ALIGN InfoNCE), ``siglip`` (pairwise
sigmoid), ``lightclip`` (softened negatives + patch-word matching), ``albef_itc`` (momentum
distillation with queues), ``sail`` (sigmoid loss with several positive captions). Build one or a
weighted sum with :func:`build`; see :mod:`vlkit.objectives.base` for the contract.
"""

from .base import (
    CLIP_INIT_LOGIT_SCALE,
    LN_100,
    OBJECTIVES,
    SAIL_INIT_LOGIT_BIAS,
    SAIL_INIT_LOGIT_SCALE,
    SIGLIP_INIT_LOGIT_BIAS,
    SIGLIP_INIT_LOGIT_SCALE,
    Objective,
    clamp_logit_scale,
)
from .clip import ClipConfig, ClipLoss
from .siglip import SigLipLoss
from .lightclip import LightClipConfig, LightClipLoss, token_similarity
from .albef import AlbefItcConfig, AlbefItcLoss, MomentumEncoder
from .sail import SAILHead, SailLoss
from .compose import CompositeObjective, build, create

__all__ = [
    "OBJECTIVES", "Objective", "build", "create", "CompositeObjective", "clamp_logit_scale",
    "CLIP_INIT_LOGIT_SCALE", "LN_100", "SIGLIP_INIT_LOGIT_SCALE", "SIGLIP_INIT_LOGIT_BIAS",
    "SAIL_INIT_LOGIT_SCALE", "SAIL_INIT_LOGIT_BIAS",
    "ClipConfig", "ClipLoss", "SigLipLoss", "LightClipConfig", "LightClipLoss", "token_similarity",
    "AlbefItcConfig", "AlbefItcLoss", "MomentumEncoder", "SAILHead", "SailLoss",
]
