"""CLIP / ALIGN symmetric InfoNCE loss.

Papers: "Learning Transferable Visual Models From Natural Language Supervision" (CLIP,
arXiv 2103.00020) and "Scaling Up Visual and Vision-Language Representation Learning With Noisy
Text Supervision" (ALIGN, arXiv 2102.05918).

loss = (CE(s * I T^T, labels) + CE(s * T I^T, labels)) / 2 with s = exp(logit_scale), a learned
temperature initialised at 1/0.07 (:data:`CLIP_INIT_LOGIT_SCALE`). The scale is clamped to at
most 100 by the engine after each optimizer step (:func:`clamp_logit_scale`), not here: a clamp
inside the loss would silently zero the gradient of the scale.

Distributed training follows open_clip's ``ClipLoss``: features are gathered across ranks (with
gradient by default, see :mod:`vlkit.objectives.distributed`). With ``local_loss`` each rank
scores only its own rows against all gathered columns (labels offset by ``rank * B``), O(B N)
memory instead of O(N^2); the mean of the per-rank losses is the global-batch loss either way.

Options beyond the CLIP paper: ``label_smoothing`` (ALIGN's Hugging Face port uses 0.1; the
ALIGN paper itself does not state it) is ``F.cross_entropy``'s: the target puts
``1 - eps + eps / N`` on the positive and ``eps / N`` on every column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import CLIP_INIT_LOGIT_SCALE, LN_100, Objective, clamp_logit_scale, register
from .distributed import gather, world

__all__ = ["ClipConfig", "ClipLoss", "clamp_logit_scale", "contrastive_logits"]


@dataclass
class ClipConfig:
    label_smoothing: float = 0.0  # ALIGN (HF port): 0.1
    local_loss: bool = False  # score local rows vs all columns (open_clip --local-loss)
    gather_with_grad: bool = True  # exact global-batch gradient (open_clip --gather-with-grad)


def contrastive_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                       scale: torch.Tensor, local_loss: bool, gather_with_grad: bool):
    """Gather across ranks and build both logit matrices.

    Returns ``(logits_per_image, logits_per_text, first_label)``: the positive of row ``i`` sits
    in column ``first_label + i``. Shapes: (B, N) with ``local_loss``, else (N, N), N = world * B.
    """
    rank, world_size = world()
    all_image = gather(image_features, gather_with_grad)  # (N, D)
    all_text = gather(text_features, gather_with_grad)  # (N, D)
    if local_loss:
        logits_per_image = scale * image_features @ all_text.T  # (B, N)
        logits_per_text = scale * text_features @ all_image.T  # (B, N)
        return logits_per_image, logits_per_text, rank * image_features.shape[0]
    logits_per_image = scale * all_image @ all_text.T  # (N, N)
    return logits_per_image, logits_per_image.T, 0


@register("clip")
class ClipLoss(Objective):
    """Symmetric InfoNCE over the (global) batch; returns ``{"contrastive_loss"}``."""

    Config = ClipConfig
    init_logit_scale = CLIP_INIT_LOGIT_SCALE
    logit_scale_range = (0.0, LN_100)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        cfg = self.cfg
        logits_i, logits_t, first = contrastive_logits(
            image_features, text_features, logit_scale.exp(), cfg.local_loss, cfg.gather_with_grad
        )
        labels = torch.arange(logits_i.shape[0], device=logits_i.device) + first
        loss = (
            F.cross_entropy(logits_i, labels, label_smoothing=cfg.label_smoothing)
            + F.cross_entropy(logits_t, labels, label_smoothing=cfg.label_smoothing)
        ) / 2
        return {"contrastive_loss": loss}
