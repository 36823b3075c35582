"""LightCLIP: progressively softened instance labels and token-level patch-word alignment.

Paper: "LightCLIP: Learning Multi-Level Interaction for Lightweight Vision-Language Models"
(Nie et al., arXiv 2312.00674). Two of its three training objectives are here:

1. **Instance level, progressively softened negative labels.** Web image-text pairs are not
   strictly one-to-one, so the target of the symmetric InfoNCE loss gives the negatives a small
   and growing share: ``target = (1 - eps) * one_hot + eps / (N - 1)`` on each negative column,
   where ``eps`` ramps with training ``progress`` (in [0, 1], passed in ``**extra``):

       eps(progress) = eps_max * min(1, progress / ramp_end)     (linear ramp, then flat)

   Why this schedule: we could read the paper's abstract ("softening the label of negative
   samples progressively") but not its equation for the schedule (the stored copies of the text
   we could search stop after the introduction), so the exact form is unverified. A linear ramp
   from 0 is the simplest reading of "progressively": early on the similarities carry no
   information and a hard one-hot target is the useful signal; later, as near-duplicate captions
   start to score high, the softened target stops penalising them as hard negatives. ``eps_max``
   defaults to 0.1, the label-smoothing value of ALIGN, also unverified against the paper.
   With ``eps = 0`` the loss is exactly CLIP's (tested). Without ``progress`` we use 1.0.

2. **Token level, relaxed bipartite matching.** Given patch tokens ``image_tokens`` (B, P, D),
   word tokens ``text_tokens`` (B, T, D) and ``text_mask`` (B, T) in ``**extra``, the
   similarity of image i and text j is the mean over the valid words of text j of each word's
   best cosine similarity among the patches of image i ("relaxed": several words may match the
   same patch, no one-to-one constraint; no Hungarian assignment). These (B, B) similarities,
   times exp(logit_scale), go through a symmetric hard-label InfoNCE: ``token_loss``.

Deviations: the masked language modelling objective and its auxiliary image-text fusion module
are not implemented (they need a text decoder head, outside a loss on features). The token loss
uses the local batch only (tokens are not gathered across ranks), L2-normalises the tokens
itself, shares the global ``logit_scale`` and uses hard labels; the paper's choices on these
points were not verified. The instance-level term gathers across ranks like :mod:`.clip`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import CLIP_INIT_LOGIT_SCALE, LN_100, Objective, register, symmetric_cross_entropy
from .clip import contrastive_logits

__all__ = ["LightClipConfig", "LightClipLoss", "soft_negative_targets", "token_similarity"]


@dataclass
class LightClipConfig:
    eps_max: float = 0.1  # share of the target spread over negatives at the end of the ramp
    ramp_end: float = 1.0  # progress at which eps reaches eps_max
    token_weight: float = 1.0  # weight of token_loss inside this objective; 0: no token term
    local_loss: bool = False
    gather_with_grad: bool = True
    token_chunk: int = 8_000_000  # max elements of one (rows, B, T, P) similarity block


def soft_negative_targets(rows: int, cols: int, first: int, eps: float, device=None):
    """(rows, cols) targets: ``1 - eps`` at column ``first + i`` of row i, ``eps / (cols - 1)``
    on every other column (all of it on the positive when there is no negative)."""
    off = eps / (cols - 1) if cols > 1 else 0.0
    targets = torch.full((rows, cols), off, device=device)
    idx = torch.arange(rows, device=device)
    targets[idx, idx + first] = 1.0 - eps if cols > 1 else 1.0
    return targets


def token_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor,
                     text_mask: torch.Tensor | None = None, chunk: int = 8_000_000) -> torch.Tensor:
    """(B_img, B_txt) relaxed-matching similarity: mean over valid words of the best patch.

    ``image_tokens`` (B_img, P, D), ``text_tokens`` (B_txt, T, D), ``text_mask`` (B_txt, T) with
    1 for real words; tokens are L2-normalised here. Computed in blocks of image rows so memory
    stays under ``chunk`` elements.
    """
    image_tokens = F.normalize(image_tokens, dim=-1)
    text_tokens = F.normalize(text_tokens, dim=-1)
    n_img, n_patch = image_tokens.shape[:2]
    n_txt, n_word = text_tokens.shape[:2]
    if text_mask is None:
        text_mask = torch.ones(n_txt, n_word, device=text_tokens.device)
    mask = text_mask.to(text_tokens.dtype)  # (B_txt, T)
    n_valid = mask.sum(dim=-1).clamp(min=1)  # (B_txt,)
    step = max(1, chunk // max(1, n_txt * n_word * n_patch))
    rows = []
    for start in range(0, n_img, step):
        block = image_tokens[start:start + step]  # (b, P, D)
        sims = torch.einsum("bpd,jtd->bjtp", block, text_tokens)  # (b, B_txt, T, P)
        best = sims.amax(dim=-1)  # (b, B_txt, T): each word's best patch
        rows.append((best * mask).sum(dim=-1) / n_valid)  # (b, B_txt)
    return torch.cat(rows, dim=0)


@register("lightclip")
class LightClipLoss(Objective):
    """Returns ``{"contrastive_loss", "token_loss"?}`` (token term only when tokens are given).

    With ``token_weight > 0`` the objective asks the training task for both towers' tokens
    (``requires``), so a pretraining run computes the token term every step; a tower without
    token features is refused in one line, and ``token_weight: 0`` trains without the term.
    """

    Config = LightClipConfig
    init_logit_scale = CLIP_INIT_LOGIT_SCALE
    logit_scale_range = (0.0, LN_100)

    def __init__(self, cfg=None):
        super().__init__(cfg)
        if self.cfg.token_weight > 0:
            self.requires = ("image_tokens", "text_tokens")

    def eps(self, progress: float | None) -> float:
        """Negative-label share at training ``progress`` (see the module docstring)."""
        progress = 1.0 if progress is None else float(progress)
        ramp = min(1.0, max(0.0, progress) / self.cfg.ramp_end) if self.cfg.ramp_end > 0 else 1.0
        return self.cfg.eps_max * ramp

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        cfg = self.cfg
        scale = logit_scale.exp()
        logits_i, logits_t, first = contrastive_logits(
            image_features, text_features, scale, cfg.local_loss, cfg.gather_with_grad
        )
        eps = self.eps(extra.get("progress"))
        targets = soft_negative_targets(*logits_i.shape, first, eps, device=logits_i.device)
        out = {"contrastive_loss": symmetric_cross_entropy(logits_i, logits_t, targets, targets)}
        if extra.get("image_tokens") is not None and extra.get("text_tokens") is not None:
            sims = token_similarity(
                extra["image_tokens"], extra["text_tokens"], extra.get("text_mask"), cfg.token_chunk
            )  # (B, B)
            logits = scale * sims
            labels = torch.arange(logits.shape[0], device=logits.device)
            token = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            out["token_loss"] = cfg.token_weight * token
        return out
