"""BiomedCoOp: CoOp regularised by an ensemble of class-description prompts, pruned by robust z-score.

"BiomedCoOp: Learning to Prompt for Biomedical Vision-Language Models" (Koleilat et al., arXiv
2411.15232; HealthX-Lab/BiomedCoOp ``trainers/BiomedCoOp/biomedcoop_*.py``). CoOp's unified
context (4 tokens from "a photo of a") plus two terms built from P = 50 LLM-written prompts per
class (``BIOMEDCOOP_TEMPLATES``), whose frozen text features ``f[c, i]`` are precomputed:

- **SCCM** (semantic consistency by contextual mapping): ``MSE(w_c, mean_i f[c, i])`` between
  each learned prompt's normalised text feature and the renormalised mean of its class's
  description features, averaged over classes and feature dimensions; weight 0.5.
- **KDSP** (knowledge distillation with selective prompting): every batch, prompt slot i
  (the i-th description of every class) is scored ``s_i = mean_b max_c scale * x_b . f[c, i]``;
  slots whose robust z-score ``|s_i - median(s)| / MAD(s)`` exceeds tau = 1.5 are dropped;
  the kept slots' features are averaged per class into a zero-shot classifier whose logits
  teach the prompted ones: ``KL(p_teacher || p_model)`` summed and divided by B * n_cls;
  weight 0.25.

Loss ``CE + 0.5 * SCCM + 0.25 * KDSP``. Defaults (the few-shot configs): SGD lr 0.0025
(momentum 0.9, wd 5e-4), batch 4, 100 epochs, 1 constant warm-up epoch at 1e-5, cosine;
random-resized crops, no flips; the last epoch's model is reported.

Deviations: no biomedical backbone (the reference runs BiomedCLIP, CLIP, PubMedCLIP or
PMC-CLIP): any vlkit model with a token-level text tower. The descriptions are not written by
an LLM: they come from :mod:`vlkit.adapt.descriptions` (the digits and shapes grammars, the
emoji packages' aliases and multilingual names) or a user's file, ``descriptions=PATH``; a
class with fewer than P descriptions cycles its own (the reference has exactly 50 per class).
The pruning is the robust z-score as the paper writes it; the reference code standardises that
z-score again by its mean and standard deviation before comparing with tau, which, being
affine in the scores, reduces to a plain z-score; where MAD is 0 only the slots at the median
are kept (the reference divides by zero). Image features come from the shared cache of
augmented views, and the frozen image path serves both the prompted and the zero-shot logits
(the reference keeps a second copy of the same frozen image encoder). The description
features are computed once through the shared text-feature cache, lazily at the first
training step, so an adapter transfers to classes that have no descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..base import help_field, register_method, with_ce
from ..descriptions import description_features, slots
from ..descriptions import load as load_descriptions
from .coop import CoOp, CoOpConfig


@dataclass
class BiomedCoOpConfig(CoOpConfig):
    """Paper: 4 tokens from "a photo of a", SCCM 0.5, KDSP 0.25, tau 1.5, 50 prompts, SGD lr 0.0025, batch 4, 100 epochs."""

    n_ctx: int = help_field(4, "number of learned context tokens (ignored with ctx_init: the phrase's length)")
    ctx_init: str = help_field("a photo of a", "init phrase for the context ('': random, std 0.02)")
    batch_size: int = help_field(4, "training batch size")
    lr: float = help_field(2.5e-3, "base learning rate")
    flip: bool = help_field(False, "random horizontal flip (the reference's transforms have none)")
    sccm_weight: float = help_field(0.5, "weight of the MSE between prompted and mean description text features")
    kdsp_weight: float = help_field(0.25, "weight of the KL from the pruned description ensemble's logits")
    tau: float = help_field(1.5, "robust z-score (median/MAD) above which a description slot is pruned")
    n_prompts: int = help_field(50, "description prompts per class (at most the longest list; shorter lists cycle)")
    descriptions: str = help_field("", "YAML/JSON file: class name -> list of descriptions ('': built-in ones)")


def robust_keep(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """(P,) bool: slots whose robust z-score |s - median| / MAD is at most ``tau``.

    ``torch.median`` is the lower median, an element of ``scores``, so at least one slot stays;
    with MAD 0 every slot off the median counts as an outlier.
    """
    med = scores.median()
    dev = (scores - med).abs()
    mad = dev.median()
    if mad == 0:
        return dev == 0
    return dev / mad <= tau


def ensemble_terms(logits: torch.Tensor, text: torch.Tensor, image: torch.Tensor, desc: torch.Tensor,
                   scale: torch.Tensor | float, tau: float) -> dict[str, torch.Tensor]:
    """SCCM and KDSP, unweighted, from the prompted logits (B, C), text (C, D), image (B, D)
    features (both normalised) and the description features ``desc`` (C, P, D), normalised."""
    mean_desc = F.normalize(desc.mean(dim=1), dim=-1)  # (C, D)
    sccm = F.mse_loss(text, mean_desc.to(text.dtype))
    with torch.no_grad():
        per_slot = scale * torch.einsum("bd,cpd->pbc", image, desc.to(image.dtype))  # (P, B, C)
        scores = per_slot.max(dim=-1).values.mean(dim=-1)  # (P,)
        keep = robust_keep(scores, tau)
        teacher = F.normalize(desc[:, keep].mean(dim=1), dim=-1).to(image.dtype)  # (C, D)
        teacher_logp = F.log_softmax(scale * image @ teacher.T, dim=-1)  # (B, C)
    kdsp = (teacher_logp.exp() * (teacher_logp - F.log_softmax(logits, dim=-1))).sum() / logits.numel()
    return {"sccm": sccm, "kdsp": kdsp, "keep": keep}


@register_method("biomedcoop")
class BiomedCoOp(CoOp):
    Config = BiomedCoOpConfig

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 100}

    def prepare(self, train_views: torch.Tensor, labels: torch.Tensor) -> None:
        self.description_features()  # a file that misses classes fails before the first step

    def description_features(self) -> torch.Tensor:
        """(n_cls, P, D) frozen features of the description prompts (loaded at the first call)."""
        if getattr(self, "_desc", None) is None:
            descs = load_descriptions(self.classnames, self.config.descriptions or None)
            feats = description_features(self.model, slots(descs, self.config.n_prompts))
            object.__setattr__(self, "_desc", feats)  # not a buffer: never part of the adapter
        if self._desc.device != self.logit_scale.device:  # moved once, not every step
            object.__setattr__(self, "_desc", self._desc.to(self.logit_scale.device))
        return self._desc

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits, text = self.logits_and_text(batch)
        out = with_ce({"logits": logits}, batch)
        if "labels" in batch:
            terms = ensemble_terms(logits, text, self.image_features(batch), self.description_features(),
                                   self.logit_scale, self.config.tau)
            out["sccm_loss"] = self.config.sccm_weight * terms["sccm"]
            out["kdsp_loss"] = self.config.kdsp_weight * terms["kdsp"]
        return out
