"""KgCoOp: CoOp regularised towards the hand-crafted prompt's text features.

"Visual-Language Prompt Tuning with Knowledge-guided Context Optimization" (Yao et al., arXiv
2303.13283; htyao89/KgCoOp). CoOp's context plus the loss
``CE + lambda * (1 - mean_i cos(w_i, w_i^clip))`` where ``w^clip`` is the frozen text feature of
the hand-crafted prompt; lambda 8.0. Defaults: 4 tokens from "a photo of a", SGD lr 0.002
(momentum 0.9, wd 5e-4), batch 128, 100 epochs, Dassl schedule, random-resized crops at 0.08-1
and flips, the last epoch's model reported.

Deviations: ``w^clip`` is the zero-shot ensemble over the data view's templates (the
reference uses one hand-written template per dataset); it is computed once through the shared
text-feature cache, as the image features come from the cache of augmented views; flips only
where the dataset declares them safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..base import help_field, register_method, with_ce
from ..features import text_classifier
from .coop import CoOp, CoOpConfig


@dataclass
class KgCoOpConfig(CoOpConfig):
    """Paper: 4 tokens from "a photo of a", lambda 8, SGD lr 0.002, batch 128, 100 epochs."""

    n_ctx: int = help_field(4, "number of learned context tokens")
    ctx_init: str = help_field("a photo of a", "init phrase for the context ('': random)")
    batch_size: int = help_field(128, "training batch size")
    kg_weight: float = help_field(8.0, "lambda: weight of 1 - cos(prompted, hand-crafted) text features")


@register_method("kgcoop")
class KgCoOp(CoOp):
    Config = KgCoOpConfig

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        targets = text_classifier(model, self.classnames, self.templates)  # (n_cls, D), frozen
        self.register_buffer("clip_text", targets.to(model.device), persistent=False)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 100}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits, text = self.logits_and_text(batch)
        out = with_ce({"logits": logits}, batch)
        if "labels" in batch:
            cos = F.cosine_similarity(text, self.clip_text.to(text.dtype), dim=-1)  # (n_cls,)
            out["kg_loss"] = self.config.kg_weight * (1.0 - cos.mean())
        return out
