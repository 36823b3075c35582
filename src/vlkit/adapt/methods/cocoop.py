"""CoCoOp: conditional context, prompts shifted per image by a small meta-network.

"Conditional Prompt Learning for Vision-Language Models" (Zhou et al., arXiv 2203.05557;
KaiyangZhou/CoOp ``trainers/cocoop.py``). CoOp's context plus a Meta-Net
``Linear(D -> D/16) -> ReLU -> Linear(-> W)`` on the normalised image feature; its output
pi(x) is added to every context token, so each image has its own prompts for every class.
Defaults: 4 tokens from "a photo of a", SGD lr 0.002 (momentum 0.9, wd 5e-4), batch 1, 10
epochs, Dassl schedule (1 warm-up epoch at 1e-5, cosine), random-resized crops at 0.08-1 and
flips, the last epoch's model reported.

Deviations: the reference runs the text tower once per image in a Python loop (batch 1 only,
about 64x CoOp's memory); here the (B, n_cls) prompts of a batch go through the text tower
together, ``chunk`` sequences per pass, which computes the same logits (tested against a
per-image loop) and allows batches > 1. Image features come from the shared cache of augmented
views (``augment=fresh``: a new view per epoch); flips only where the dataset declares them
safe; the meta-net's biases get no weight decay (Dassl decays every parameter).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Method, MethodConfig, help_field, register_method
from ..prompts import PromptTokens, encode_prompts, init_context, place_end


@dataclass
class CoCoOpConfig(MethodConfig):
    """Paper: 4 tokens from "a photo of a", SGD lr 0.002, batch 1, 10 epochs."""

    n_ctx: int = help_field(4, "number of learned context tokens (ignored with ctx_init)")
    ctx_init: str = help_field("a photo of a", "init phrase for the context ('': random, std 0.02)")
    batch_size: int = help_field(1, "training batch size (paper: 1; any size works here)")
    chunk: int = help_field(512, "prompt sequences per text-tower pass (B x n_cls are split into chunks)")


@register_method("cocoop")
class CoCoOp(Method):
    Config = CoCoOpConfig
    needs_tokens = ("text",)

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        cfg = self.config
        init, prefix, n_ctx = init_context(model, 0 if cfg.ctx_init else cfg.n_ctx, cfg.ctx_init)
        self.prompts = PromptTokens(model, self.classnames, n_ctx, prefix)
        self.ctx = nn.Parameter(init.to(model.device))  # (n_ctx, W)
        d, hidden = model.embed_dim, max(1, model.embed_dim // 16)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(d, hidden)), ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, model.text.width))])).to(model.device)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 10}

    def conditional_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised image features -> (B, n_cls, D) normalised per-image class features."""
        b, n_cls = image_features.shape[0], self.n_classes
        shift = self.meta_net(image_features)  # (B, W)
        ctx = self.ctx.unsqueeze(0) + shift.unsqueeze(1)  # (B, n_ctx, W)
        ctx = ctx.unsqueeze(1).expand(-1, n_cls, -1, -1)  # (B, n_cls, n_ctx, W)
        embeds = place_end(self.prompts, ctx)  # (B, n_cls, L, W)
        feats = encode_prompts(self.model, embeds.flatten(0, 1), self.prompts.tokens(repeat=b),
                               start=self.prompts.start, chunk=self.config.chunk)  # (B * n_cls, D)
        return F.normalize(feats.view(b, n_cls, -1), dim=-1)

    def logits(self, batch: dict) -> torch.Tensor:
        f = self.image_features(batch)  # (B, D)
        text = self.conditional_text_features(f)  # (B, n_cls, D)
        return self.logit_scale * torch.einsum("bd,bcd->bc", f, text)  # (B, n_cls)

    def logits_per_image(self, batch: dict) -> torch.Tensor:
        """The reference's loop: one text-tower pass per image (for checking the batched path)."""
        f = self.image_features(batch)
        rows = [self.logit_scale * self.conditional_text_features(f[i:i + 1])[0] @ f[i] for i in range(len(f))]
        return torch.stack(rows)  # (B, n_cls)
