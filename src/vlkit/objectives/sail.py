"""SAIL: the gated-MLP alignment head and the multi-positive sigmoid loss.

Paper: "Assessing and Learning Alignment of Unimodal Vision and Language Models" (SAIL,
Zhang et al., CVPR 2025, arXiv 2412.04616). SAIL keeps a pretrained vision model and a
pretrained sentence encoder frozen (their features can be precomputed once) and trains only an
alignment layer on each side, with a sigmoid loss in which every caption of an image counts as
a positive column. Paper settings: Lion, lr 1e-5, wd 1e-4, betas (0.9, 0.99); logit scale 20,
bias -10 (:data:`SAIL_INIT_LOGIT_SCALE` = log 20, :data:`SAIL_INIT_LOGIT_BIAS`).

- :class:`SAILHead` ("gated MLP"): two parallel ``Linear(d_in -> e * d_in)``, the first through
  ReLU6, multiplied elementwise, then ``Linear(e * d_in -> d_out)``, with expansion e = 8.
- ``sail`` objective: the SigLIP loss (``-sum log sigmoid(z (s x.y + b)) / B``) where row i's
  positives are all captions of image i. Give either ``text_features`` of shape (B * C, D),
  grouped by image (rows ``i*C .. i*C + C - 1`` are image i's captions), or an explicit
  ``positive_mask`` (B, N_text) in ``**extra``. In a distributed run texts are gathered as in
  SigLIP and a local (B, N_text_local) mask is placed at this rank's block of columns.

Deviations: the head applies no normalisation itself (the caller L2-normalises its output, as
the contract says features are normalised); the paper's choice of input features (DINOv2 CLS
concatenated with mean-pooled patches) belongs to the model layer, not here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..models.heads import GatedMLP
from .base import LN_100, SAIL_INIT_LOGIT_BIAS, SAIL_INIT_LOGIT_SCALE, register
from .distributed import world
from .siglip import SigLipLoss

__all__ = ["SAILHead", "SailLoss"]


# The head is a model part (a DualEncoder head type, saved and reloaded with the model); the
# objective module re-exports it under SAIL's name.
SAILHead = GatedMLP


@register("sail")
class SailLoss(SigLipLoss):
    """Sigmoid loss with several positive captions per image; returns ``{"contrastive_loss"}``."""

    init_logit_scale = SAIL_INIT_LOGIT_SCALE
    init_logit_bias = SAIL_INIT_LOGIT_BIAS
    logit_scale_range = (0.0, LN_100)

    def positive_mask(self, n_image: int, n_text: int, column_offset: int, extra: dict):
        world_size = world()[1]
        n_local = n_text // world_size
        given = extra.get("positive_mask")
        if given is not None:
            given = given.bool().cpu()
            if given.shape == (n_image, n_text):
                return given
            if given.shape != (n_image, n_local):
                raise UserError(
                    f"positive_mask has shape {tuple(given.shape)}, expected ({n_image}, "
                    f"{n_local}) (images x texts of this rank); build it from the batch's captions"
                )
            mask = torch.zeros(n_image, n_text, dtype=torch.bool)
            mask[:, column_offset:column_offset + n_local] = given
            return mask
        if n_local % n_image:
            raise UserError(
                f"{n_local} texts for {n_image} images: give the same number of captions per image "
                "(grouped by image) or pass a positive_mask"
            )
        per_image = n_local // n_image  # C captions per image
        mask = torch.zeros(n_image, n_text, dtype=torch.bool)
        for i in range(n_image):
            start = column_offset + i * per_image
            mask[i, start:start + per_image] = True
        return mask
