"""PromptSRC: independent deep prompts in both towers, self-regularised towards the frozen model.

"Self-regulating Prompts: Foundational Model Adaptation without Forgetting" (Khattak et al.,
ICCV 2023, arXiv 2307.06948; muzairkhattak/PromptSRC ``trainers/promptsrc.py``).

Prompts: VPT-style deep prompts in each tower, learned independently (no coupling function,
unlike MaPLe). Text: n_ctx 4 tokens initialised from "a photo of a" at the input (random, std
0.02, when n_ctx exceeds the phrase's tokens; with fewer, the rest of the phrase stays fixed
text), and random
(std 0.02) prompts replacing them at the input of layers 1..J-1; vision: n_ctx 4 random (std
0.02) tokens appended after the patch tokens at the input and replaced at layers 1..J-1;
depth J = 9 in both towers. Only the prompts train.

Loss (self-regularising constraints, with the frozen model as teacher):
``CE + 25 * L1(w, w_zs) + 10 * L1(f, f_zs) + T^2 * KL(p_zs || p) / (B * n_cls)``, where ``w``
are the prompted text features and ``w_zs`` the frozen zero-shot text features (the mean over
templates), ``f`` the prompted and ``f_zs`` the frozen image features of the same batch (all
L2-normalised; L1 is the mean absolute difference), ``p`` and ``p_zs`` the softmax of the
prompted and zero-shot logits at temperature T = 1 (the reference's
``F.kl_div(log_softmax(logits), log_softmax(zs_logits), reduction="sum", log_target=True)``,
i.e. the KL from the zero-shot distribution).

Gaussian prompt aggregation (GPA): after epoch e (1..N) the prompts are added to a running sum
with weight ``g(e) / sum_k g(k)``, ``g`` a Gaussian density with mean 15 and std 1 (epochs);
after the last epoch the aggregate replaces the prompts. Defaults (base-to-new config): SGD lr
0.0025 (momentum 0.9, wd 5e-4), 1 constant warm-up epoch at 1e-5, cosine, batch 4, 20 epochs,
random-resized crops 0.08-1 and flips; the (GPA) model after the last epoch is reported.

Deviations: each tower's depth is capped at its own layer count (the reference hard-codes
ViT-B/16's 12); widths come from the model. ``w_zs`` is the CLIP ensemble of the data view's
templates (each template's feature normalised before the mean; the reference averages the 60
ImageNet templates' raw features). When a run trains N epochs rather than the paper's 20 (a
``budget`` or an explicit ``epochs``), the Gaussian's mean and std are scaled by N / 20, so
the aggregate covers the same part of training; the weights are computed in log space (a
Gaussian far from every epoch never underflows to 0 / 0). GPA acts on the prompts only (the
reference averages the whole state dict, whose other entries are frozen). Flips only where the
dataset declares them safe; fp32 unless the run asks otherwise (reference: fp16). The frozen
image features are recomputed with the image tower every step, as the reference does (the
prompted image tower runs anyway). With ``selection=val`` the best validation epoch's prompts
are reported instead of the aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ..base import Method, MethodConfig, help_field, register_method, with_ce
from ..features import text_classifier
from ..prompts import PromptTokens, deep_text_features, init_context, phrase_embeddings

PAPER_EPOCHS = 20


@dataclass
class PromptSRCConfig(MethodConfig):
    """Paper: 4 + 4 tokens, depth 9, weights 25 / 10 / 1, GPA mean 15 std 1, SGD lr 0.0025, batch 4, 20 epochs."""

    n_ctx_text: int = help_field(4, "learned text prompt tokens per layer")
    n_ctx_vision: int = help_field(4, "learned vision prompt tokens per layer")
    ctx_init: str = help_field("a photo of a", "init phrase: its first n_ctx_text tokens initialise the text context")
    prompt_depth_text: int = help_field(9, "text layers with prompts, counting the input (capped at the tower's depth)")
    prompt_depth_vision: int = help_field(9, "vision layers with prompts, counting the input (capped at the tower's depth)")
    text_loss_weight: float = help_field(25.0, "lambda1: weight of L1(prompted, frozen zero-shot text features)")
    image_loss_weight: float = help_field(10.0, "lambda2: weight of L1(prompted, frozen image features)")
    kl_weight: float = help_field(1.0, "weight of the KL between zero-shot and prompted logits")
    kl_temperature: float = help_field(1.0, "softmax temperature of that KL (its loss is multiplied by T^2)")
    gpa_mean: float = help_field(15.0, "GPA Gaussian mean, in epochs of a 20-epoch run (scaled to the run's length)")
    gpa_std: float = help_field(1.0, "GPA Gaussian std, in epochs of a 20-epoch run (scaled to the run's length)")
    batch_size: int = help_field(4, "training batch size")
    lr: float = help_field(0.0025, "base learning rate")


def gpa_weights(n_epochs: int, mean: float, std: float) -> torch.Tensor:
    """(n_epochs,) float64 weights of epochs 1..N: a Gaussian density at each epoch, normalised to sum 1."""
    if n_epochs < 1 or not std > 0:
        raise UserError(f"GPA needs at least one epoch and gpa_std > 0, got {n_epochs} epochs and std {std}")
    e = torch.arange(1, n_epochs + 1, dtype=torch.float64)
    return torch.softmax(-0.5 * ((e - mean) / std) ** 2, dim=0)  # the density's constant cancels


def src_losses(logits: torch.Tensor, zs_logits: torch.Tensor, text: torch.Tensor, zs_text: torch.Tensor,
               image: torch.Tensor, zs_image: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The unweighted self-regularising terms: L1 on text (n_cls, D) and image (B, D) features
    (mean absolute difference) and the KL from the zero-shot to the prompted logits (B, n_cls)."""
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(zs_logits / t, dim=-1),
                  reduction="sum", log_target=True) * (t * t) / logits.numel()
    return {"text": F.l1_loss(text, zs_text.to(text.dtype)), "image": F.l1_loss(image, zs_image.to(image.dtype)),
            "kl": kl}


def _deep(n: int, n_ctx: int, width: int, device) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter(torch.randn(n_ctx, width, device=device) * 0.02) for _ in range(n)])


@register_method("promptsrc")
class PromptSRC(Method):
    Config = PromptSRCConfig
    needs_tokens = ("text", "vision")

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        cfg, dev = self.config, model.device
        if cfg.n_ctx_text < 1 or cfg.n_ctx_vision < 1:
            raise UserError(f"promptsrc needs n_ctx_text >= 1 and n_ctx_vision >= 1, "
                            f"got {cfg.n_ctx_text} and {cfg.n_ctx_vision}")
        self.depth_text = max(1, min(cfg.prompt_depth_text, model.text.n_layers))
        self.depth_vision = max(1, min(cfg.prompt_depth_vision, model.visual.n_layers))
        # the phrase initialises the context only when it has n_ctx_text tokens or more (the
        # reference's ``n_ctx <= 4`` for its 4-token phrase); otherwise random, std 0.02
        phrase = cfg.ctx_init if cfg.ctx_init and cfg.n_ctx_text <= len(phrase_embeddings(model, cfg.ctx_init)) else ""
        init, prefix, n_ctx = init_context(model, cfg.n_ctx_text, phrase)
        self.prompts = PromptTokens(model, self.classnames, n_ctx, prefix)
        self.ctx = nn.Parameter(init.to(dev))  # (n_ctx, W_text)
        self.deep_text = _deep(self.depth_text - 1, n_ctx, model.text.width, dev)  # layers 1..J-1
        self.vision = _deep(self.depth_vision, cfg.n_ctx_vision, model.visual.width, dev)  # layers 0..J-1
        zs_text = text_classifier(model, self.classnames, self.templates)  # (n_cls, D), frozen
        self.register_buffer("zs_text", zs_text.to(dev), persistent=False)
        self._gpa: dict[str, torch.Tensor] | None = None  # running weighted sum of the prompts

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": PAPER_EPOCHS}

    def uses_image_tower(self) -> bool:
        return True

    # -- features ------------------------------------------------------------------------------
    def text_features(self) -> torch.Tensor:
        return deep_text_features(self.model, self.prompts, self.ctx, self.deep_text)  # (n_cls, D)

    def image_features(self, batch: dict) -> torch.Tensor:
        prompts = {i: p for i, p in enumerate(self.vision)}  # (n_ctx, W_vis) per layer
        pooled = self.model.visual.forward_prompted(batch["images"], prompts)
        return self.model.project_image(pooled)  # (B, D), normalised

    def frozen_image_features(self, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.model.encode_image(batch["images"], normalize=False), dim=-1)  # (B, D)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.logit_scale * self.image_features(batch) @ self.text_features().T  # (B, n_cls)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        text, image = self.text_features(), self.image_features(batch)
        out = with_ce({"logits": self.logit_scale * image @ text.T}, batch)
        if "labels" in batch:
            cfg = self.config
            zs_image = self.frozen_image_features(batch)
            zs_logits = self.logit_scale * zs_image @ self.zs_text.to(zs_image.dtype).T  # (B, n_cls)
            terms = src_losses(out["logits"], zs_logits, text, self.zs_text, image, zs_image, cfg.kl_temperature)
            out["text_l1_loss"] = cfg.text_loss_weight * terms["text"]
            out["image_l1_loss"] = cfg.image_loss_weight * terms["image"]
            out["kl_loss"] = cfg.kl_weight * terms["kl"]
        return out

    # -- Gaussian prompt aggregation (called by the training task at epoch ends) -----------------
    def gpa_schedule(self, n_epochs: int) -> torch.Tensor:
        """(n_epochs,) weights of this run: the paper's Gaussian scaled from 20 epochs to ``n_epochs``."""
        stretch = n_epochs / PAPER_EPOCHS
        return gpa_weights(n_epochs, self.config.gpa_mean * stretch, self.config.gpa_std * stretch)

    def on_epoch_end(self, done: int, n_epochs: int) -> None:
        """Add the prompts after epoch ``done`` (1-based) of ``n_epochs`` to the weighted sum."""
        if not 1 <= done <= n_epochs:
            return
        w = float(self.gpa_schedule(n_epochs)[done - 1])
        params = {k: p.detach().double() for k, p in self.named_parameters()}
        if self._gpa is None:
            self._gpa = {k: w * v for k, v in params.items()}
        else:
            self._gpa = {k: self._gpa[k] + w * v for k, v in params.items()}

    def on_fit_end(self) -> None:
        """Replace the prompts by their aggregate (when at least one epoch finished)."""
        if self._gpa is None:
            return
        with torch.no_grad():
            for k, p in self.named_parameters():
                p.copy_(self._gpa[k].to(p.dtype))
        self._gpa = None
