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

``text_negatives: bank`` (LiT-style alignment only; a deviation from CLIP's in-batch loss):
when the text tower is locked and its features come from the feature cache, the feature of
every training caption is known at every step, so each image is contrasted against all of them
(an exact memory bank: the negatives of MoCo's or ALBEF's queues, without staleness, since the
locked tower never changes; the shared head is applied to the whole bank each step, so it
trains too). The image-to-text term is the cross-entropy over the bank, with the image's other
captions left out of its negatives; the text-to-image term stays in-batch (gathered). Needs
``text_bank`` (M, D), ``text_bank_index`` (B,) and optionally ``text_bank_other`` (B, M) in
``**extra``, which the pretraining task supplies from its text cache.

Options beyond the CLIP paper: ``label_smoothing`` (ALIGN's Hugging Face port uses 0.1; the
ALIGN paper itself does not state it) is ``F.cross_entropy``'s: the target puts
``1 - eps + eps / N`` on the positive and ``eps / N`` on every column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .base import CLIP_INIT_LOGIT_SCALE, LN_100, Objective, clamp_logit_scale, register
from .distributed import gather, world

__all__ = ["ClipConfig", "ClipLoss", "bank_cross_entropy", "clamp_logit_scale", "contrastive_logits"]


@dataclass
class ClipConfig:
    label_smoothing: float = 0.0  # ALIGN (HF port): 0.1
    local_loss: bool = False  # score local rows vs all columns (open_clip --local-loss)
    gather_with_grad: bool = True  # exact global-batch gradient (open_clip --gather-with-grad)
    text_negatives: Literal["batch", "bank"] = "batch"  # bank: every cached caption (locked text only)


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

    def __init__(self, cfg=None):
        super().__init__(cfg)
        if self.cfg.text_negatives == "bank":
            self.requires = ("text_bank", "text_bank_index")

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        cfg = self.cfg
        scale = logit_scale.exp()
        logits_i, logits_t, first = contrastive_logits(
            image_features, text_features, scale, cfg.local_loss, cfg.gather_with_grad
        )
        labels = torch.arange(logits_i.shape[0], device=logits_i.device) + first
        loss_t = F.cross_entropy(logits_t, labels, label_smoothing=cfg.label_smoothing)
        if cfg.text_negatives == "bank":
            self.check_extra(extra)
            loss_i = bank_cross_entropy(image_features, extra["text_bank"], extra["text_bank_index"],
                                        scale, extra.get("text_bank_other"), cfg.label_smoothing)
        else:
            loss_i = F.cross_entropy(logits_i, labels, label_smoothing=cfg.label_smoothing)
        return {"contrastive_loss": (loss_i + loss_t) / 2}


def bank_cross_entropy(image_features: torch.Tensor, bank: torch.Tensor, target: torch.Tensor,
                       scale: torch.Tensor, other: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Image-to-text InfoNCE against a bank of caption features.

    image_features: (B, D) local rows; bank: (M, D); target: (B,) bank row of each image's
    caption; other: (B, M) bool, True for the image's other captions, which are not negatives.
    """
    logits = scale * image_features @ bank.T  # (B, M)
    allowed = torch.ones_like(logits, dtype=torch.bool)
    if other is not None:
        allowed = ~other
        allowed[torch.arange(len(target), device=target.device), target] = True
    log_p = logits.masked_fill(~allowed, float("-inf")).log_softmax(dim=-1)  # (B, M)
    nll = -log_p.gather(1, target[:, None]).squeeze(1)  # (B,)
    if not label_smoothing:
        return nll.mean()
    # F.cross_entropy's smoothing, spread over the allowed columns only (masked ones are -inf)
    uniform = -(log_p.masked_fill(~allowed, 0.0).sum(dim=1) / allowed.sum(dim=1))  # (B,)
    return ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()
