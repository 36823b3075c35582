"""Tip-Adapter and Tip-Adapter-F: a key-value cache model built from the few-shot features.

"Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification" (Zhang et al.,
arXiv 2207.09519; gaopengcuhk/Tip-Adapter). Keys F: the few-shot image features averaged over
augmented views (10 in the paper: random-resized crops at scale 0.5-1 and flips), then
L2-normalised (its ``build_cache_model``); values L: one-hot labels. For a test feature f:
``logits = exp(logit_scale) f W^T + alpha * exp(-beta (1 - f F^T)) L``.
Tip-Adapter is training-free; Tip-Adapter-F makes the keys learnable (initialised to F) and
trains them with torch's AdamW (lr 1e-3, eps 1e-4, betas (0.9, 0.999), weight decay 0.01),
batch 256, 20 epochs, cosine to 0 with no warm-up. alpha and beta (initial values 1, 1) are
then grid-searched (beta over (0.1, 7], 200 steps; alpha over (0.1, 3], 20 steps, as the
reference).

Deviations: the search uses the validation split only (the reference picks the best epoch and
searches alpha/beta on test, its issue #11); the epoch of Tip-Adapter-F is chosen on
validation too (``selection=val``). ``100`` in the paper is CLIP's ``exp(logit_scale)``; we use
the model's own scale. The augmented views are the shared cache's (``views`` of the run, 10 by
default); Tip-Adapter-F's epochs draw from those views instead of new crops (``augment=fresh``
draws a new view per epoch, as the reference's loader); flips only where the dataset declares
them safe. The cache holds per-class values, so neither method classifies new classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AugmentConfig, Method, MethodConfig, help_field, register_method
from ..features import text_classifier


@dataclass
class TipAdapterConfig(AugmentConfig):
    """Training-free: the cache (10 views, crops 0.5-1, flips) and the alpha/beta search."""

    aug_scale: list[float] = help_field([0.5, 1.0], "random-resized-crop scale range of the cache's views")

    init_alpha: float = help_field(1.0, "alpha before the search (weight of the cache logits)")
    init_beta: float = help_field(1.0, "beta before the search (sharpness of the affinities)")
    search_scale: list[float] = help_field([7.0, 3.0], "upper ends of the beta and alpha grids")
    search_step: list[int] = help_field([200, 20], "number of beta and alpha grid points")
    search: bool = help_field(True, "grid-search alpha and beta on validation")


@register_method("tip_adapter")
class TipAdapter(Method):
    Config = TipAdapterConfig
    trainable = False
    class_agnostic = False

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        d, dev = model.embed_dim, model.device
        weights = text_classifier(model, self.classnames, self.templates)  # (n_cls, D)
        self.register_buffer("text_weights", weights.to(dev), persistent=False)
        self._make_keys(torch.zeros(0, d, device=dev))
        self.register_buffer("cache_values", torch.zeros(0, self.n_classes, device=dev))
        self.register_buffer("alpha", torch.tensor(float(self.config.init_alpha), device=dev))
        self.register_buffer("beta", torch.tensor(float(self.config.init_beta), device=dev))

    def _make_keys(self, keys: torch.Tensor) -> None:
        self.register_buffer("cache_keys", keys)

    def describe_selection(self, selection: str | None) -> str:
        base = super().describe_selection(selection)
        return base + ("; alpha, beta searched on validation" if self.config.search else "")

    def prepare(self, train_views: torch.Tensor, labels: torch.Tensor) -> None:
        """Keys: mean over views of the features, then L2-normalised (N, D); values one-hot (N, C)."""
        keys = F.normalize(train_views.float().mean(dim=0), dim=-1)  # (N, D), as build_cache_model
        dev = self.text_weights.device
        with torch.no_grad():
            self._set_keys(keys.to(dev))
            self.cache_values = F.one_hot(labels.long(), self.n_classes).float().to(dev)  # (N, C)

    def _set_keys(self, keys: torch.Tensor) -> None:
        self.cache_keys = keys

    def resize_for(self, state: dict) -> None:
        dev = self.text_weights.device
        with torch.no_grad():
            self._set_keys(torch.zeros_like(state["cache_keys"], device=dev))
            self.cache_values = torch.zeros_like(state["cache_values"], device=dev)

    def _parts(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(zero-shot logits, cache affinities f F^T), both (B, ...)."""
        return self.logit_scale * f @ self.text_weights.T, f @ self.cache_keys.T

    def logits(self, batch: dict) -> torch.Tensor:
        clip_logits, affinity = self._parts(self.image_features(batch))
        cache_logits = torch.exp(-self.beta * (1 - affinity)) @ self.cache_values  # (B, n_cls)
        return clip_logits + self.alpha * cache_logits

    @torch.no_grad()
    def tune(self, val_features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Grid-search alpha and beta on validation features (never on test)."""
        if not self.config.search or len(labels) == 0:
            return {}
        dev = self.text_weights.device
        f = F.normalize(val_features.float().to(dev), dim=-1)
        clip_logits, affinity = self._parts(f)
        labels = labels.to(dev)
        (b_hi, a_hi), (b_n, a_n) = self.config.search_scale, self.config.search_step
        betas = [i * (b_hi - 0.1) / b_n + 0.1 for i in range(int(b_n))]
        alphas = torch.tensor([i * (a_hi - 0.1) / a_n + 0.1 for i in range(int(a_n))], device=dev)
        best = (-1.0, float(self.alpha), float(self.beta))
        for beta in betas:
            cache = torch.exp(-beta * (1 - affinity)) @ self.cache_values  # (N, C)
            logits = clip_logits[None] + alphas[:, None, None] * cache[None]  # (A, N, C)
            acc = (logits.argmax(-1) == labels).float().mean(dim=1)  # (A,)
            i = int(acc.argmax())
            if float(acc[i]) > best[0]:
                best = (float(acc[i]), float(alphas[i]), beta)
        self.alpha.fill_(best[1])
        self.beta.fill_(best[2])
        return {"val_acc": best[0], "alpha": best[1], "beta": best[2]}


@dataclass
class TipAdapterFConfig(MethodConfig, TipAdapterConfig):
    """Paper: AdamW lr 1e-3, eps 1e-4, batch 256, 20 epochs, cosine; then the alpha/beta search."""

    aug_scale: list[float] = help_field([0.5, 1.0], "random-resized-crop scale range of the cache's views")
    batch_size: int = help_field(256, "training batch size")
    optimizer: str = help_field("adamw", "optimizer")
    lr: float = help_field(1e-3, "base learning rate")
    eps: float = help_field(1e-4, "AdamW epsilon (paper: 1e-4)")
    weight_decay: float = help_field(0.01, "weight decay (PyTorch AdamW's default, as the reference)")
    schedule: str = help_field("cosine", "lr schedule (CosineAnnealingLR in the reference)")
    warmup_epochs: int = help_field(0, "warm-up epochs")
    selection: str = help_field("val", "model reported: val (best validation epoch; the reference picks it on test) or last")


@register_method("tip_adapter_f")
class TipAdapterF(TipAdapter):
    """Tip-Adapter with learnable keys (the cache's ``nn.Linear`` initialised to F)."""

    Config = TipAdapterFConfig
    trainable = True

    def _make_keys(self, keys: torch.Tensor) -> None:
        self.cache_keys = nn.Parameter(keys)

    def _set_keys(self, keys: torch.Tensor) -> None:
        self.cache_keys = nn.Parameter(keys.clone())

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 20}
