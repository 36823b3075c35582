"""Zero-shot-initialised linear probe: a linear head on frozen image features that starts as
the zero-shot classifier.

The ZS-LP baseline of "A Closer Look at the Few-Shot Adaptation of Large Vision-Language
Models" (Silva-Rodriguez et al., CLAP, arXiv 2312.12730): a linear probe whose class weights
start at the text embeddings of the class prompts, so at 1 shot it starts where zero-shot is
instead of at chance (the CLIP / CoOp logistic-regression probe, ``linear_probe``, can fall
below zero-shot at 1-2 shots). This is vlkit's own variant, not CLAP's code:

- the head is an ``nn.Linear`` on L2-normalised features standardised with the training
  features' mean and std (kept in the adapter state; CLIP features are nearly collinear and a
  probe on raw coordinates trains slowly); its initial weights equal
  ``exp(logit_scale) * text weights`` in those coordinates (``init=zeros``: from zero);
- trained in vlkit's loop with AdamW (lr 1e-2, wd 1e-4, torch's betas), cosine, 200 epochs,
  on the cached augmented views (crops 0.08-1, flips where the data allow);
- the reported model is the best validation epoch (``selection=val``; CLAP instead fixes its
  schedule and constrains the weights to stay near the zero-shot prototypes).

It learns per-class weights, so it cannot classify new classes.
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
class ZSLinearProbeConfig(MethodConfig):
    """vlkit's recipe: AdamW lr 1e-2 wd 1e-4, cosine, 200 epochs (cheap: cached features), best validation epoch."""

    optimizer: str = help_field("adamw", "optimizer: sgd, adamw or lion")
    lr: float = help_field(1e-2, "base learning rate")
    weight_decay: float = help_field(1e-4, "weight decay (the probe's L2 regulariser)")
    schedule: str = help_field("cosine", "lr schedule")
    warmup_epochs: int = help_field(0, "warm-up epochs")
    selection: str = help_field("val", "model reported: val (best validation epoch) or last")
    init: str = help_field("zeroshot", "initial weights: zeroshot (text weights x logit scale) or zeros")


@register_method("zs_linear_probe")
class ZSLinearProbe(Method):
    Config = ZSLinearProbeConfig
    class_agnostic = False

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        if self.config.init not in ("zeroshot", "zeros"):
            raise unknown_name("zs_linear_probe init", self.config.init, ["zeroshot", "zeros"])
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
