"""MaPLe: multi-modal prompt learning, deep prompts in both towers coupled text -> vision.

"MaPLe: Multi-modal Prompt Learning" (Khattak et al., arXiv 2210.03117;
muzairkhattak/multimodal-prompt-learning ``trainers/maple.py``). Text prompts: n_ctx 2 learned
tokens initialised from the first tokens of "a photo of a" (the rest of the phrase stays
fixed text); deep text prompts (random, std 0.02, drawn independently) replace the prompt
tokens at the input of layers 1..J-1 (prompt depth J = 9). Vision prompts are not free
parameters: each layer's are produced from that layer's text prompts by a coupling
``Linear(text_width -> vision_width)``, one per layer. As in the reference, the couplings of
layers 1..J-1 start as copies of one initialisation (its ``_get_clones``) and layer 0's has its
own. Cross-entropy only. Dassl SGD lr 0.0035 (momentum 0.9, wd 5e-4), 1 warm-up epoch at
1e-5, cosine, batch 4, 5 epochs, random-resized crops at 0.08-1 and flips; the last epoch's
model is reported.

Widths are read from the model (``text.width``, ``visual.width``), so any tower size works;
the reference hard-codes 512/768 (ViT-B only; its issues #46 and #49). The depth is capped at
the towers' layer count. The vision prompts change the image tower's tokens, so this method
cannot use cached image features: it runs the image tower every step (slow on a CPU).
Deviations: flips only where the dataset declares them safe; fp32 unless the run asks
otherwise (the reference: fp16).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UserError
from ..base import Method, MethodConfig, help_field, register_method
from ..prompts import PromptTokens, deep_text_features, init_context


@dataclass
class MaPLeConfig(MethodConfig):
    """Paper: n_ctx 2 from "a photo of a", prompt depth 9, SGD lr 0.0035, batch 4, 5 epochs."""

    n_ctx: int = help_field(2, "learned prompt tokens per layer, in each tower")
    ctx_init: str = help_field("a photo of a", "init phrase: its first n_ctx tokens initialise the context")
    prompt_depth: int = help_field(9, "layers with prompts, counting the input (capped at the towers' depth)")
    batch_size: int = help_field(4, "training batch size")
    lr: float = help_field(0.0035, "base learning rate")


@register_method("maple")
class MaPLe(Method):
    Config = MaPLeConfig
    needs_tokens = ("text", "vision")

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        cfg, dev = self.config, model.device
        if cfg.n_ctx < 1:
            raise UserError(f"maple needs n_ctx >= 1, got {cfg.n_ctx}")
        self.depth = max(1, min(cfg.prompt_depth, model.text.n_layers, model.visual.n_layers))
        init, prefix, n_ctx = init_context(model, cfg.n_ctx, cfg.ctx_init)
        self.prompts = PromptTokens(model, self.classnames, n_ctx, prefix)
        t_width, v_width = model.text.width, model.visual.width
        self.ctx = nn.Parameter(init.to(dev))  # (n_ctx, W_text)
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.randn(n_ctx, t_width, device=dev) * 0.02) for _ in range(self.depth - 1)])
        # coupling functions: layer 0 from ctx, layer i from deep_text[i - 1]; the deep ones are
        # clones of one initialisation, as the reference's _get_clones
        deep = nn.Linear(t_width, v_width)
        self.couplings = nn.ModuleList(
            [nn.Linear(t_width, v_width)] + [copy.deepcopy(deep) for _ in range(self.depth - 1)]).to(dev)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 5}

    def uses_image_tower(self) -> bool:
        return True

    def text_features(self) -> torch.Tensor:
        return deep_text_features(self.model, self.prompts, self.ctx, self.deep_text)  # (n_cls, D)

    def vision_prompts(self) -> dict[int, torch.Tensor]:
        text = [self.ctx, *self.deep_text]
        return {i: coupling(p) for i, (coupling, p) in enumerate(zip(self.couplings, text))}  # (n_ctx, W_vis)

    def image_features(self, batch: dict) -> torch.Tensor:
        pooled = self.model.visual.forward_prompted(batch["images"], self.vision_prompts())
        return self.model.project_image(pooled)  # (B, D), normalised

    def logits(self, batch: dict) -> torch.Tensor:
        return self.logit_scale * self.image_features(batch) @ self.text_features().T  # (B, n_cls)
