"""LoRA on the attention projections of either or both towers (CLIP-LoRA's recipe).

"Low-Rank Few-Shot Adaptation of Vision-Language Models" (Zanella and Ben Ayed, arXiv
2405.18541; MaxZanella/CLIP-LoRA), with LoRA from arXiv 2106.09685. Low-rank updates on q, k
and v of every attention layer of both towers: rank 2, alpha 1, dropout 0.25 on the branch
input, the update scaled by alpha / sqrt(r) (CLIP-LoRA's ``loralib/layers.py``; Hu et al. use
alpha / r: ``rank_scaling=linear``); AdamW lr 2e-4, wd 1e-2, betas (0.9, 0.999), eps 1e-8
(torch's defaults), cosine to 1e-6 with no warm-up; 500 x shots iterations, batch 32; one
template "a photo of a {}."; cross-entropy on ``exp(logit_scale) * cos``; random-resized crops
at scale 0.08-1 and flips; the final model is reported (its validation pass is switched off).

Deviations: the template is ``template`` or the data view's first template; the logit scale is
the model's own (CLIP-LoRA fixes 100, CLIP's); flips only where the dataset declares them safe;
training is fp32 unless the run asks otherwise (CLIP-LoRA: fp16 autocast with a grad scaler).
With ``towers=[text]`` the image features come from the shared cache of augmented views; with
the vision tower adapted the image tower runs every step. ``merge()`` returns a copy of the
model with the updates folded into the weights (zero inference overhead; same logits).
``save()`` also writes the updates in PEFT's LoRA format (docs/interop.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError, unknown_name
from ..base import Method, MethodConfig, help_field, register_method
from ..features import fill, text_classifier
from ..lora_layers import RANK_SCALINGS, find_targets, fold, installed

TOWERS = {"vision": "visual", "text": "text"}


@dataclass
class LoRAConfig(MethodConfig):
    """CLIP-LoRA: rank 2, alpha 1 (update alpha / sqrt(r) B A), dropout 0.25, q/k/v of both towers,
    AdamW lr 2e-4 wd 1e-2 betas (0.9, 0.999) eps 1e-8, cosine to 1e-6, 500 x shots steps, last model."""

    towers: list[str] = help_field(["vision", "text"], "towers to adapt: vision, text or both")
    projections: list[str] = help_field(["q", "k", "v"], "attention projections to adapt: q, k, v, o")
    rank: int = help_field(2, "rank r of each update")
    alpha: float = help_field(1.0, "scaling numerator")
    rank_scaling: str = help_field(
        "sqrt", "update scale: sqrt (alpha / sqrt(r), CLIP-LoRA) or linear (alpha / r, Hu et al.)")
    dropout: float = help_field(0.25, "dropout on the LoRA branch input")
    template: str = help_field("", "prompt template with {} ('': the data view's first template)")
    optimizer: str = help_field("adamw", "optimizer")
    lr: float = help_field(2e-4, "base learning rate")
    weight_decay: float = help_field(1e-2, "weight decay")
    schedule: str = help_field("cosine", "lr schedule")
    warmup_epochs: int = help_field(0, "warm-up epochs")
    min_lr: float = help_field(1e-6, "lr at the end of the cosine")


@register_method("lora")
class LoRA(Method):
    Config = LoRAConfig

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        cfg = self.config
        bad = [t for t in cfg.towers if t not in TOWERS]
        if bad or not cfg.towers:
            raise UserError(f"lora towers {cfg.towers} must be a non-empty list of vision, text")
        if cfg.rank_scaling not in RANK_SCALINGS:
            raise unknown_name("lora rank_scaling", cfg.rank_scaling, RANK_SCALINGS)
        scaling = RANK_SCALINGS[cfg.rank_scaling](cfg.alpha, max(1, cfg.rank))
        self.targets = []  # lora_layers.Target records (plain list: not submodules)
        self.factors = nn.ModuleDict()
        for tower in cfg.towers:
            found = find_targets(getattr(model, TOWERS[tower]), f"{TOWERS[tower]}.", cfg.projections,
                                 cfg.rank, scaling, cfg.dropout)
            if not found:
                kind = getattr(getattr(model, TOWERS[tower]), "kind", tower)
                raise UserError(f"method 'lora' needs attention layers in the {tower} tower, but this model's {kind} "
                                f"{tower} tower has none; adapt only the other tower (towers=[...]) or use a "
                                "transformer tower (e.g. preset:moji-lit-s)")
            self.targets += found
        for t in self.targets:
            self.factors[t.name.replace(".", "__")] = t.factors
        self.factors.to(model.device)
        self.template = cfg.template or self.templates[0]
        tokens = model.tokenize([fill(self.template, c) for c in self.classnames])
        self.register_buffer("input_ids", tokens["input_ids"].to(model.device), persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"].to(model.device), persistent=False)
        if "text" not in cfg.towers:
            weights = text_classifier(model, self.classnames, [self.template])
            self.register_buffer("text_weights", weights.to(model.device), persistent=False)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"steps": 500 * shots}

    def uses_image_tower(self) -> bool:
        return "vision" in self.config.towers

    def _text(self) -> torch.Tensor:
        if "text" not in self.config.towers:
            return self.text_weights
        return self.model.encode_text({"input_ids": self.input_ids, "attention_mask": self.attention_mask})

    def logits(self, batch: dict) -> torch.Tensor:
        with installed(self.targets):
            if self.uses_image_tower():
                image = self.model.encode_image(batch["images"])  # (B, D), normalised
            else:
                image = self.image_features(batch)
            text = self._text()  # (n_cls, D), normalised
        return self.logit_scale * image @ text.T

    def peft_updates(self) -> list:
        """Each wrapped projection's update as one LoRA (q/k/v blocks of a fused one stacked)."""
        from ...models.peft_adapter import stacked

        return [stacked(t.name, list(t.factors.A), list(t.factors.B), [offset for offset, _ in t.factors.blocks],
                        t.factors.out_features, t.factors.scaling) for t in self.targets]

    def save(self, path):
        """vlkit's adapter files, plus the same LoRA in PEFT's format (``adapter_config.json`` +
        ``adapter_model.safetensors``, see :mod:`vlkit.models.peft_adapter`): ``peft`` loads it
        onto a Hugging Face tower, ``vlkit eval MODEL --adapter DIR`` merges it."""
        from ...models.peft_adapter import write_lora

        path = super().save(path)
        write_lora(path, self.model, self.peft_updates(), rslora=self.config.rank_scaling == "sqrt",
                   dropout=self.config.dropout, extra={"method": self.name})
        return path

    @torch.no_grad()
    def merge(self):
        """A copy of the model with every update folded into its weights (no wrappers left)."""
        merged = copy.deepcopy(self.model)
        return fold(merged, self.targets)

    def merged_logits(self, merged, batch: dict) -> torch.Tensor:
        """Logits of a merged model for ``batch`` (images), for checking the merge."""
        image = merged.encode_image(batch["images"])
        text = merged.encode_text({"input_ids": self.input_ids, "attention_mask": self.attention_mask})
        return merged.logit_scale.exp() * image @ F.normalize(text, dim=-1).T
