"""Tower interfaces: what prompt methods, token-level losses and feature caches rely on.

Every image tower maps images (B, 3, H, W) to pooled features (B, output_dim); every text tower
maps token ids to pooled features (B, output_dim). The DualEncoder's heads then project both to
the joint space. Towers built from tokens also expose their insides, because prompt methods
(CoOp, MaPLe, PromptSRC, VPT-style deep prompts) and token losses (LightCLIP) need them:

- vision (:class:`TokenVisionTower`): ``forward_prompted(images, prompts={layer: (n, W) or
  (B, n, W)})``. Layer-0 prompts are appended after the patch tokens (after the positional
  embedding, before any pre-norm, as MaPLe does); prompts at a later layer replace the prompt
  tokens present at that layer's input (or are appended if there are none). Pooling and the
  returned patch tokens never include prompt tokens.
- text (:class:`PromptableTextTower`): ``embed_tokens(input_ids) -> (B, L, W)`` (token embeddings
  without positions, so a method can overwrite rows: shallow prompts), then
  ``forward_embeddings(embeds, tokens, deep_prompts, prompt_start)`` adds positions, runs the
  layers, replacing positions ``prompt_start:prompt_start+n`` at the input of layer i >= 1 with
  ``deep_prompts[i]``, and pools as the tower was trained to (EOT argmax for open_clip and OpenAI
  CLIP, first EOS for newer HF CLIP configs, last token for SigLIP, masked mean for
  sentence-transformers encoders).

Widths (``width``) always come from the model. ``return_tokens=True`` gives a dict
``{"pooled", "tokens"}`` (+ ``"mask"`` for text) with tokens in the pooled feature space (after
the final norm and the tower's own projection), so the DualEncoder head can map both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry

# Tower types usable in a composed config ({"type": NAME, ...}); each entry is a class with a
# ``Config`` dataclass and ``build(cfg, ctx) -> tower``. The builder may fill fields of ``cfg``
# (e.g. a Hugging Face config) so that the stored config rebuilds the skeleton offline.
VISION_TOWERS: Registry = Registry("vision tower type")
TEXT_TOWERS: Registry = Registry("text tower type")


@dataclass
class BuildContext:
    """What a tower builder needs besides its own config."""

    weights: bool = True  # load pretrained weights (False: skeleton, weights come later)
    assets: Path | None = None  # files a saved model keeps for this tower (tokenizer, ...)
    image_size: int = 224


@contextmanager
def seeded(seed: int | None):
    """Random init from ``seed`` without touching the caller's global RNG state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tower_output(pooled, tokens=None, mask=None, return_tokens: bool = False):
    """The tower return convention: pooled tensor, or a dict when tokens are asked for."""
    if not return_tokens:
        return pooled
    out = {"pooled": pooled, "tokens": tokens}
    if mask is not None:
        out["mask"] = mask
    return out


def _as_layer_dict(prompts, n_layers: int, what: str) -> dict[int, torch.Tensor]:
    """Accept {layer: tensor} or a list indexed by layer (None entries skipped)."""
    if prompts is None:
        return {}
    if isinstance(prompts, Mapping):
        items = list(prompts.items())
    elif isinstance(prompts, Sequence) and not isinstance(prompts, (str, bytes)):
        items = list(enumerate(prompts))
    else:
        raise UserError(f"{what} must be a dict {{layer: tensor}} or a list indexed by layer")
    out = {}
    for layer, value in items:
        if value is None:
            continue
        layer = int(layer)
        if not 0 <= layer < n_layers:
            raise UserError(f"{what} given for layer {layer}, but the tower has layers 0..{n_layers - 1}")
        out[layer] = value
    return out


def _expand_prompt(p: torch.Tensor, batch: int, width: int, what: str, like: torch.Tensor):
    """(n, W) or (B, n, W) -> (B, n, W) in the dtype/device of ``like``."""
    if p.dim() == 2:
        p = p.unsqueeze(0).expand(batch, -1, -1)
    if p.dim() != 3 or p.shape[-1] != width or p.shape[0] not in (1, batch):
        raise UserError(
            f"{what} has shape {tuple(p.shape)}; expected (n, {width}) or ({batch}, n, {width}) "
            f"(the tower width is {width})"
        )
    if p.shape[0] == 1 and batch != 1:
        p = p.expand(batch, -1, -1)
    return p.to(dtype=like.dtype, device=like.device)


class VisionTower(nn.Module):
    """Image tower. Subclasses set ``width``, ``n_layers``, ``output_dim`` and ``kind``."""

    kind = "vision"
    supports_prompts = False
    width: int
    n_layers: int
    output_dim: int

    def forward(self, images: torch.Tensor, return_tokens: bool = False):
        raise NotImplementedError

    def forward_prompted(self, images, prompts=None, return_tokens: bool = False):
        raise UserError(
            f"the {self.kind} vision tower has no tokens, so it takes no prompts; use a ViT-style "
            "tower (convvit, open_clip ViT, Hugging Face CLIP/SigLIP)"
        )

    def save_assets(self, path: Path) -> None:
        """Write files (besides weights) that a saved model needs offline; none by default."""


class TokenVisionTower(VisionTower):
    """A vision tower that works on a token sequence: [CLS?] + patches (+ prompts).

    Subclasses provide ``_embed`` (tokens with positions, before any pre-norm), ``_pre_norm``,
    ``_block(i, x)`` and ``_pool(x) -> (pooled, patch_tokens)`` for prompt-free tokens.
    """

    supports_prompts = True

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward_prompted(self, images, prompts=None, return_tokens: bool = False):
        layers = _as_layer_dict(prompts, self.n_layers, "vision prompts")
        x = self._embed(images)  # (B, T, W)
        batch, n_base = x.shape[0], x.shape[1]
        for i in range(self.n_layers):
            if i in layers:
                p = _expand_prompt(layers[i], batch, self.width, f"vision prompt at layer {i}", x)
                x = torch.cat([x[:, :n_base], p], dim=1)  # (B, T + n, W): drop old prompts, add new
            if i == 0:
                x = self._pre_norm(x)
            x = self._block(i, x)
        pooled, tokens = self._pool(x[:, :n_base])
        return tower_output(pooled, tokens, return_tokens=return_tokens)


class TextTower(nn.Module):
    """Text tower. Subclasses set ``width``, ``n_layers``, ``output_dim``, ``context_length``,
    ``pooling`` (a word for describe) and implement ``tokenize`` and ``forward``."""

    kind = "text"
    supports_prompts = False
    pooling = "?"
    width: int
    n_layers: int
    output_dim: int
    context_length: int

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def default_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Attention mask for bare ids (when a caller passes a tensor, not a token dict)."""
        return torch.ones_like(input_ids)

    def as_tokens(self, tokens: Any) -> dict[str, torch.Tensor]:
        """A token dict from a dict or a bare (B, L) id tensor."""
        if isinstance(tokens, torch.Tensor):
            return {"input_ids": tokens, "attention_mask": self.default_mask(tokens)}
        if isinstance(tokens, Mapping) and "input_ids" in tokens:
            out = {"input_ids": tokens["input_ids"]}
            mask = tokens.get("attention_mask")
            out["attention_mask"] = self.default_mask(tokens["input_ids"]) if mask is None else mask
            return out
        raise UserError("text input must be a list of strings, a token dict with 'input_ids', or a (B, L) id tensor")

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise UserError(f"the {self.kind} text tower does not expose its token embeddings")

    def forward_embeddings(self, embeds, tokens, deep_prompts=None, prompt_start: int = 1, return_tokens=False):
        raise UserError(f"the {self.kind} text tower does not support prompts")

    def forward(self, tokens, return_tokens: bool = False):
        raise NotImplementedError

    def save_assets(self, path: Path) -> None:
        """Write the tokenizer files a saved model needs offline; none by default."""


class PromptableTextTower(TextTower):
    """A text tower whose layers vlkit runs one by one (so it can place deep prompts).

    Subclasses provide ``_input(embeds, tokens)`` (add positions etc.), ``_mask(x, tokens)``,
    ``_block(i, x, mask)`` and ``_finish(x, tokens) -> (pooled, token_features)``.
    """

    supports_prompts = True

    def _input(self, embeds, tokens):
        raise NotImplementedError

    def _mask(self, x, tokens):
        return None

    def _block(self, i, x, mask):
        raise NotImplementedError

    def _finish(self, x, tokens):
        raise NotImplementedError

    def _pooled_last_block(self, tokens, mask):
        """Optional: when the pooled feature reads one position per caption, a function that
        takes the last block's input (B, L, W) and returns the pooled feature from that
        position alone. ``None`` (the default) runs the last block in full."""
        return None

    def forward_embeddings(self, embeds, tokens, deep_prompts=None, prompt_start: int = 1, return_tokens=False):
        tokens = self.as_tokens(tokens)
        deep = _as_layer_dict(deep_prompts, self.n_layers, "deep_prompts")
        if 0 in deep:
            raise UserError("deep_prompts start at layer 1; put layer-0 prompts into the embeddings (embed_tokens)")
        x = self._input(embeds, tokens)  # (B, L, W)
        mask = self._mask(x, tokens)
        batch, length = x.shape[0], x.shape[1]
        last = None if return_tokens or not self.n_layers else self._pooled_last_block(tokens, mask)
        for i in range(self.n_layers):
            if i in deep:
                p = _expand_prompt(deep[i], batch, self.width, f"deep prompt at layer {i}", x)
                end = prompt_start + p.shape[1]
                if prompt_start < 0 or end > length:
                    raise UserError(f"deep prompt at layer {i} covers positions {prompt_start}..{end - 1}, beyond length {length}")
                x = torch.cat([x[:, :prompt_start], p, x[:, end:]], dim=1)  # (B, L, W)
            if last is not None and i == self.n_layers - 1:
                return last(x)
            x = self._block(i, x, mask)
        pooled, feats = self._finish(x, tokens)
        return tower_output(pooled, feats, tokens["attention_mask"], return_tokens)

    def forward(self, tokens, return_tokens: bool = False):
        tokens = self.as_tokens(tokens)
        return self.forward_embeddings(self.embed_tokens(tokens["input_ids"]), tokens, return_tokens=return_tokens)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: (B, L, W), (B, L) -> (B, W) (sentence-transformers pooling)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
