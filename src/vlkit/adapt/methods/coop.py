"""CoOp: context optimisation, learned prompt context vectors for a frozen CLIP.

"Learning to Prompt for Vision-Language Models" (Zhou et al., arXiv 2109.01134;
KaiyangZhou/CoOp ``trainers/coop.py``). Learned context ``ctx`` (n_ctx, W) shared by all
classes, or (n_cls, n_ctx, W) with class-specific context (CSC, the ``coop_csc`` variant),
replaces the token embeddings right after the start token; the class name sits at the end,
middle or front. Init: normal std 0.02 (CSC: an independent draw per class), or the token
embeddings of an init phrase (then n_ctx is the phrase's token count, as CoOp). Cross-entropy
only; only the context trains. Defaults (Dassl): n_ctx 16, SGD lr 0.002 (momentum 0.9, wd
5e-4), batch 32, 1 warm-up epoch at 1e-5 then cosine; epochs 50 for 1 shot, 100 for 2/4, 200
for 8/16; random-resized crops at scale 0.08-1 and flips; the last epoch's model is reported
(Dassl's ``last_step``). Base-to-new configs use 4 tokens from "a photo of a".

Deviations: image features come from the shared cache of augmented views (``views`` per image,
10 by default; ``augment=fresh``: a new view of every image each epoch, as the reference's
loader) instead of re-encoding every image every step; flips only where the dataset declares
them safe; the cosine is stepped per iteration instead of per epoch; weight decay skips 1-D
parameters (none here); prompts are cut after the longest token sequence (exact, see
``vlkit.adapt.prompts``). With an init phrase, the reference ignores CSC (its context is then
shared); ``coop_csc`` gives every class its own copy of the phrase's embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..base import Method, MethodConfig, help_field, register_method, with_ce
from ..prompts import ClassContext, PromptTokens, UnifiedContext, encode_prompts, init_context, placement


@dataclass
class CoOpConfig(MethodConfig):
    """Paper: n_ctx 16, random init, SGD lr 0.002, batch 32, epochs 50/100/100/200/200 for 1/2/4/8/16 shots."""

    n_ctx: int = help_field(16, "number of learned context tokens (ignored with ctx_init: the phrase's length)")
    ctx_init: str = help_field("", "init phrase for the context, e.g. 'a photo of a' ('': random, std 0.02)")
    csc: bool = help_field(False, "class-specific context: one context per class")
    class_token_position: str = help_field("end", "where the class name sits: end, middle or front")
    prompt_chunk: int = help_field(0, "class prompts per text-tower pass (0: all at once); lowers memory")


@register_method("coop")
class CoOp(Method):
    Config = CoOpConfig
    needs_tokens = ("text",)

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        cfg = self.config
        per_class = self.n_classes if cfg.csc else None  # CSC: an independent random draw per class
        init, prefix, n_ctx = self.initial_context(model, per_class)
        self.prompts = PromptTokens(model, self.classnames, n_ctx, prefix)
        context = ClassContext if cfg.csc else UnifiedContext  # a strategy, chosen once
        self.context = context(init.to(model.device), self.n_classes)
        self.place = placement(cfg.class_token_position)

    def initial_context(self, model, per_class: int | None) -> tuple[torch.Tensor, str | None, int]:
        """(context init, prompt prefix, n_ctx): CoOp's rule (:func:`init_context`); ProGrad overrides it."""
        cfg = self.config
        return init_context(model, 0 if cfg.ctx_init else cfg.n_ctx, cfg.ctx_init, per_class)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 50 if shots <= 1 else 100 if shots <= 4 else 200}

    def is_class_agnostic(self) -> bool:
        return not self.config.csc

    def context_tokens(self) -> torch.Tensor:
        """(n_cls, n_ctx, W) context that enters the prompts (PRE passes it through an encoder first)."""
        return self.context(self.n_classes)

    def text_features(self) -> torch.Tensor:
        """(n_cls, D) normalised features of the learned prompts."""
        embeds = self.place(self.prompts, self.context_tokens())  # (n_cls, L, W)
        feats = encode_prompts(self.model, embeds, self.prompts.tokens(), start=self.prompts.start,
                               chunk=self.config.prompt_chunk)
        return F.normalize(feats, dim=-1)

    def logits_and_text(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_features()
        return self.logit_scale * self.image_features(batch) @ text.T, text  # (B, n_cls)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.logits_and_text(batch)[0]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits, _ = self.logits_and_text(batch)
        return with_ce({"logits": logits}, batch)


@dataclass
class CoOpCSCConfig(CoOpConfig):
    """CoOp with class-specific context (the paper's CSC rows)."""

    csc: bool = help_field(True, "class-specific context: one context per class")


@register_method("coop_csc")
class CoOpCSC(CoOp):
    """CoOp's class-specific context variant: one (n_ctx, W) context per class."""

    Config = CoOpCSCConfig
    class_agnostic = False
