"""SigLIP pairwise sigmoid loss.

Paper: "Sigmoid Loss for Language Image Pre-Training" (SigLIP, arXiv 2303.15343).

    L = -(1/B) sum_i sum_j log sigmoid(z_ij * (t x_i . y_j + b)),  z_ij = +1 for pairs, -1 else

with t = exp(logit_scale) initialised at 10 and b = ``logit_bias`` at -10
(:data:`SIGLIP_INIT_LOGIT_SCALE`, :data:`SIGLIP_INIT_LOGIT_BIAS`); the strongly negative bias
keeps the initial loss from being swamped by the B^2 - B negatives.

Distributed: every rank scores its local images against the text features of all ranks,
gathered with gradient, and divides its sum by its local batch B. The mean of the per-rank
losses is then exactly the global-batch loss (sum over all N^2 pairs / N), so the gradient DDP
averages equals the single-process gradient (tested with two gloo processes).

Deviation from the paper and open_clip: they pass text chunks around the ranks in a ring
(``neighbour_exchange``) to save memory; gathering all texts at once computes the same loss with
O(B N) memory per rank, which is fine at the batch sizes vlkit targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import LN_100, SIGLIP_INIT_LOGIT_BIAS, SIGLIP_INIT_LOGIT_SCALE, Objective, register
from .distributed import all_gather_with_grad, world

__all__ = ["SigLipLoss", "sigmoid_pair_loss"]


def sigmoid_pair_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-sum log sigmoid(z * logits) / rows, with z = +1 where ``positive`` else -1."""
    signs = positive.to(logits.dtype) * 2 - 1  # (B, N) in {-1, +1}
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


@register("siglip")
class SigLipLoss(Objective):
    """Pairwise sigmoid loss; returns ``{"contrastive_loss"}``. Needs ``logit_bias``."""

    init_logit_scale = SIGLIP_INIT_LOGIT_SCALE
    init_logit_bias = SIGLIP_INIT_LOGIT_BIAS
    logit_scale_range = (0.0, LN_100)

    def positive_mask(self, n_image: int, n_text: int, column_offset: int, extra: dict):
        """Which of the ``n_text`` gathered columns are positives of each local image row.

        SigLIP: one caption per image, the positive of row i is column ``column_offset + i``.
        """
        if n_text != n_image * world()[1]:
            raise UserError(
                f"objective {self.name!r} expects one text per image, got {n_text} texts for "
                f"{n_image} images per rank; use the 'sail' objective for several captions "
                "per image"
            )
        mask = torch.zeros(n_image, n_text, dtype=torch.bool)
        rows = torch.arange(n_image)
        mask[rows, rows + column_offset] = True
        return mask

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        if logit_bias is None:
            raise UserError(
                f"objective {self.name!r} needs a logit_bias; build the model with a logit bias "
                f"(init {self.init_logit_bias})"
            )
        rank, _ = world()
        n_local_text = text_features.shape[0]
        all_text = all_gather_with_grad(text_features)  # (N_text, D)
        logits = logit_scale.exp() * image_features @ all_text.T + logit_bias  # (B, N_text)
        mask = self.positive_mask(
            image_features.shape[0], all_text.shape[0], rank * n_local_text, extra
        ).to(logits.device)
        return {"contrastive_loss": sigmoid_pair_loss(logits, mask)}
