"""Linear probe on frozen image features: the few-shot baseline of CLIP and CoOp.

"Learning Transferable Visual Models From Natural Language Supervision" (CLIP, arXiv
2103.00020, sec. 3.2) and CoOp ("Learning to Prompt for Vision-Language Models", arXiv
2109.01134) fit an L2-regularised logistic regression (L-BFGS) on frozen image features, with
the regularisation searched on validation.

Deviations: the classifier is an ``nn.Linear`` on L2-normalised features, standardised with the
training features' mean and std (kept in the adapter state), trained in vlkit's loop (AdamW,
cosine) on cached augmented views, so it shares the runner's epoch selection on validation
instead of a regularisation search; by default (``init=zeroshot``) it starts as the zero-shot
classifier (text weights times ``exp(logit_scale)``), so at 1 shot it starts where zero-shot
is instead of at chance. It learns per-class weights, so it cannot classify new classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import unknown_name
from ..base import Method, MethodConfig, help_field, register_method
from ..features import text_classifier


@dataclass
class LinearProbeConfig(MethodConfig):
    """Paper: L-BFGS logistic regression. Here: 200 epochs (cheap: cached features), AdamW."""

    optimizer: str = help_field("adamw", "optimizer: sgd, adamw or lion")
    lr: float = help_field(1e-2, "base learning rate")
    weight_decay: float = help_field(1e-4, "weight decay (the probe's L2 regulariser)")
    schedule: str = help_field("cosine", "lr schedule")
    warmup_epochs: int = help_field(0, "warm-up epochs")
    init: str = help_field("zeroshot", "initial weights: zeroshot (text weights x logit scale) or zeros")


@register_method("linear_probe")
class LinearProbe(Method):
    Config = LinearProbeConfig
    class_agnostic = False

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        if self.config.init not in ("zeroshot", "zeros"):
            raise unknown_name("linear_probe init", self.config.init, ["zeroshot", "zeros"])
        d = model.embed_dim
        self.head = nn.Linear(d, self.n_classes)
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_std", torch.ones(d))
        self._init_head()
        self.to(model.device)

    @torch.no_grad()
    def _init_head(self) -> None:
        """Zero-shot init in standardised coordinates: head(z) == scale * W f for z = (f - mean) / std."""
        if self.config.init == "zeros":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            return
        w = text_classifier(self.model, self.classnames, self.templates).to(self.feat_std) * float(self.logit_scale)
        self.head.weight.copy_(w * self.feat_std)  # (n_cls, D)
        self.head.bias.copy_(w @ self.feat_mean)

    @torch.no_grad()
    def prepare(self, train_views: torch.Tensor, labels: torch.Tensor) -> None:
        """Standardise with the training features' statistics (all views): CLIP features are
        nearly collinear, and a probe on raw coordinates trains slowly."""
        f = F.normalize(train_views.float(), dim=-1).reshape(-1, train_views.shape[-1])  # (V * N, D)
        self.feat_mean.copy_(f.mean(dim=0))
        self.feat_std.copy_(f.std(dim=0).clamp(min=1e-6) if len(f) > 1 else torch.ones_like(self.feat_std))
        self._init_head()

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 200}

    def logits(self, batch: dict) -> torch.Tensor:
        z = (self.image_features(batch) - self.feat_mean) / self.feat_std  # (B, D)
        return self.head(z)  # (B, n_cls)
