"""Zero-shot classification with hand-crafted prompts: the reference every method is compared to.

"Learning Transferable Visual Models From Natural Language Supervision" (Radford et al., CLIP,
arXiv 2103.00020): class weights are the renormalised mean of the normalised text features of
the view's templates filled with each class name (prompt ensembling); logits are
``exp(logit_scale) * cos(image, class)``. Nothing is trained.

Deviations: none (the view's templates play the role of CLIP's per-dataset template lists).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Method, register_method
from ..features import text_classifier


@dataclass
class ZeroShotConfig:
    """Zero-shot has no options: the templates come from the data view."""


@register_method("zeroshot")
class ZeroShot(Method):
    Config = ZeroShotConfig
    trainable = False
    train_features = "none"  # the training images are not used

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        weights = text_classifier(model, self.classnames, self.templates)  # (n_cls, D)
        self.register_buffer("text_weights", weights.to(model.device), persistent=False)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.logit_scale * self.image_features(batch) @ self.text_weights.T  # (B, n_cls)
