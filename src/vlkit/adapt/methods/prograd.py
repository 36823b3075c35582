"""ProGrad: CoOp whose gradient never opposes the zero-shot model's "general knowledge".

"Prompt-aligned Gradient for Prompt Tuning" (Zhu et al., arXiv 2205.14865; BeierZhu/Prompt-align
``ProGrad.public/trainers/prograd.py`` and ``prograd_backward_and_update`` in its Dassl fork).
CoOp's context; two losses on each batch: the cross-entropy ``L_ce`` and the distillation loss
``L_kl = T^2 KL(softmax(z_zs / T) || softmax(z / T))`` from the frozen zero-shot prediction
``z_zs`` (hand-crafted prompts) to the prompted one ``z``. With ``g_ce``, ``g_kl`` their
gradients, the update uses ``g_ce`` where ``g_ce . g_kl >= 0`` and otherwise its projection

    g = g_ce - lambda * (g_ce . g_kl / ||g_kl||^2) g_kl

(lambda 1: the component orthogonal to g_kl). As the reference, the test and the projection are
per parameter tensor, each flattened (the context is the only trainable tensor, so this is
also the projection over all prompt parameters). Defaults (``scripts/prograd.sh``, configs
``rn50*``): 16 tokens whose last four are "a photo of a"'s embeddings and the rest zeros, T 1,
lambda 1, SGD lr 0.002 (momentum 0.9, wd 5e-4), batch 32, epochs 50 / 100 / 200 for 1 / 2-4 /
8-16 shots as CoOp, 1 warm-up epoch at 1e-5 then cosine, random-resized crops at 0.08-1 and
flips, the last epoch's model reported.

How it runs in the one training loop: ``forward`` computes both gradients with
``torch.autograd.grad`` (two backward passes through the text tower, as the reference), projects,
and returns ``loss = L_ce.detach() + sum(p * g) - sum(p * g).detach()``, whose value is the
cross-entropy and whose gradient is the projected ``g``; the engine's backward, optimizer, clipping
and precision then work unchanged.

Deviations: ``L_kl`` is the KL divergence; the reference minimises the soft cross-entropy
``-sum softmax(z_zs/T) log softmax(z/T)``, which differs by the (constant) teacher entropy: the
same gradient. ``z_zs`` uses the zero-shot ensemble over the data view's templates (the
reference: one hand-written template per dataset), computed once. Under fp16 autocast the two
inner gradients are taken without a loss scale (the reference's projection path runs only in
fp32); in a distributed run each rank projects its own gradient before DDP averages them. As in
CoOp here: image features come from the cache of augmented views, flips only where the dataset
declares them safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import UserError
from ..base import help_field, register_method, with_ce
from ..features import text_classifier
from ..prompts import PLACEHOLDER, phrase_embeddings
from .coop import CoOp, CoOpConfig


def prograd_project(g_ce: torch.Tensor, g_kl: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """``g_ce`` where it agrees with ``g_kl`` (dot >= 0), else ``g_ce - lam (g_ce.g_kl/||g_kl||^2) g_kl``
    (both flattened; a zero ``g_kl`` leaves ``g_ce`` as it is)."""
    dot = (g_ce.flatten().float() @ g_kl.flatten().float())
    norm_sq = g_kl.float().pow(2).sum().clamp_min(torch.finfo(torch.float32).tiny)
    coef = torch.where(dot < 0, lam * dot / norm_sq, torch.zeros_like(dot))  # no host sync
    return g_ce - coef.to(g_ce.dtype) * g_kl


@dataclass
class ProGradConfig(CoOpConfig):
    """Paper: 16 tokens ending with "a photo of a" (zeros before), T 1, lambda 1, SGD lr 0.002, batch 32."""

    n_ctx: int = help_field(16, "number of learned context tokens; with ctx_init the phrase fills the last ones")
    ctx_init: str = help_field("a photo of a", "phrase whose embeddings end the context, zeros before ('': random)")
    temperature: float = help_field(1.0, "T of the KL between zero-shot and prompted predictions (reference 1)")
    prograd_lambda: float = help_field(1.0, "lambda: how much of g_ce's conflicting component along g_kl is removed")


@register_method("prograd")
class ProGrad(CoOp):
    Config = ProGradConfig

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        if self.config.temperature <= 0:
            raise UserError(f"prograd.temperature must be positive, got {self.config.temperature}")
        targets = text_classifier(model, self.classnames, self.templates)  # (n_cls, D), frozen zero-shot
        self.register_buffer("clip_text", targets.to(model.device), persistent=False)

    def initial_context(self, model, per_class):
        """The reference's init: n_ctx tokens, the phrase's embeddings in the last ones, zeros before."""
        cfg = self.config
        if not cfg.ctx_init:
            return super().initial_context(model, per_class)
        phrase = phrase_embeddings(model, cfg.ctx_init)  # (k, W)
        k = phrase.shape[0]
        if cfg.n_ctx < k:
            raise UserError(f"prograd.n_ctx={cfg.n_ctx} is shorter than ctx_init {cfg.ctx_init!r} ({k} tokens); "
                            f"set prograd.n_ctx={k} or more")
        init = torch.zeros(cfg.n_ctx, phrase.shape[1])
        init[cfg.n_ctx - k:] = phrase
        return init, " ".join([PLACEHOLDER] * (cfg.n_ctx - k) + [cfg.ctx_init]), cfg.n_ctx

    def kl_loss(self, logits: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
        """T^2 KL(zero-shot || prompted) over the batch (``batchmean``)."""
        t = self.config.temperature
        zs = self.logit_scale * image_feats @ self.clip_text.to(image_feats.dtype).T  # (B, n_cls)
        return F.kl_div(F.log_softmax(logits / t, dim=-1), F.softmax(zs / t, dim=-1),
                        reduction="batchmean") * t * t

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        feats = self.image_features(batch)
        logits = self.logit_scale * feats @ self.text_features().T  # (B, n_cls)
        out = with_ce({"logits": logits}, batch)
        if "labels" not in batch or not (self.training and torch.is_grad_enabled()):
            return out
        params = self.trainable_parameters()
        ce, kl = out.pop("ce_loss"), self.kl_loss(logits, feats)
        g_kl = torch.autograd.grad(kl, params, retain_graph=True, allow_unused=True)
        g_ce = torch.autograd.grad(ce, params, allow_unused=True)
        surrogate = logits.new_zeros(())
        for p, a, b in zip(params, g_ce, g_kl):
            if a is None:
                continue
            g = a if b is None else prograd_project(a, b, self.config.prograd_lambda)
            surrogate = surrogate + (p * g.detach()).sum()  # gradient: g
        out.update(loss=ce.detach() + surrogate - surrogate.detach(), ce=ce.detach(), kl=kl.detach())
        return out
