"""CLIP-Adapter: a residual bottleneck MLP on the frozen image feature.

"CLIP-Adapter: Better Vision-Language Models with Feature Adapters" (Gao et al., arXiv
2110.04544). ``A(f) = ReLU(W2 ReLU(W1 f))`` with W1: D -> D/4 and W2: D/4 -> D, both without
bias; ``f' = ratio * A(f) + (1 - ratio) * f`` with the residual ratio 0.2; the class weights
are the fixed hand-crafted text features; cross-entropy on ``exp(logit_scale) * cos(f', w)``.
The adapter sees the image tower's projected feature before normalisation, as in the paper.

The reference (gaopengcuhk/CLIP-Adapter ``clip_adapter.py``) trains through the Dassl trainer:
200 epochs, batch 32, random-resized crops at 0.08-1 and flips, the last epoch's model. Its
optimiser settings are not in the repository; we use the CoOp family's Dassl recipe (SGD lr
2e-3, momentum 0.9, wd 5e-4, 1 constant warm-up epoch at 1e-5, cosine).

Deviations: text weights are the ensemble over the view's templates; features come from the
shared cache of augmented views (``augment=fresh``: a new view per epoch); flips only where
the dataset declares them safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Method, MethodConfig, help_field, register_method
from ..features import text_classifier


@dataclass
class CLIPAdapterConfig(MethodConfig):
    """Paper: 200 epochs, batch 32, residual ratio 0.2, reduction 4."""

    ratio: float = help_field(0.2, "residual ratio: weight of the adapted feature (paper: 0.2)")
    reduction: int = help_field(4, "bottleneck reduction: hidden width = D / reduction")


@register_method("clip_adapter")
class CLIPAdapter(Method):
    Config = CLIPAdapterConfig

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        d = model.embed_dim
        hidden = max(1, d // self.config.reduction)
        self.adapter = nn.Sequential(nn.Linear(d, hidden, bias=False), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, d, bias=False), nn.ReLU(inplace=True)).to(model.device)
        weights = text_classifier(model, self.classnames, self.templates)  # (n_cls, D)
        self.register_buffer("text_weights", weights.to(model.device), persistent=False)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 200}

    def logits(self, batch: dict) -> torch.Tensor:
        f = self.image_embeds(batch)  # (B, D), unnormalised
        ratio = self.config.ratio
        f = F.normalize(ratio * self.adapter(f) + (1 - ratio) * f, dim=-1)
        return self.logit_scale * f @ self.text_weights.T  # (B, n_cls)
