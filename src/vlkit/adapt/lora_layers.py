"""A small LoRA for the attention projections of any vlkit tower (peft is not a dependency).

"LoRA: Low-Rank Adaptation of Large Language Models" (Hu et al., arXiv 2106.09685): a frozen
weight W gets a trainable update ``scaling * B A`` with A (r, in) Kaiming-uniform and B (out, r)
zero, so training starts from the frozen model; dropout acts on the LoRA branch's input, as in
CLIP-LoRA. ``scaling`` is given by the caller: ``alpha / r`` in Hu et al., ``alpha / sqrt(r)`` in
CLIP-LoRA (its ``loralib/layers.py``; see :data:`RANK_SCALINGS`). Three kinds of attention
projections are found by name and type:

- separate ``nn.Linear`` q/k/v (Hugging Face BERT ``query/key/value``, CLIP ``q_proj/...``):
  :class:`LoRALinear`;
- a fused ``nn.Linear`` named ``qkv`` (vlkit's convvit, timm ViTs): :class:`LoRALinear` with one
  (A, B) pair per q/k/v block of the output, so it equals three separate LoRAs;
- ``nn.MultiheadAttention`` (open_clip): its fused ``in_proj_weight`` is used by
  :class:`LoRAMultiheadAttention`, which computes q, k, v itself (LoRA on each, dropout on the
  branch input) and then scaled-dot-product attention and ``out_proj`` as PyTorch does;
  ``bias_k``/``bias_v``/``add_zero_attn`` are not supported.

The wrappers hold the frozen module and the factors by plain reference: the factors belong to
the method (its ``state_dict``), the wrappers are swapped into the tower only inside
:func:`installed`, so the shared model is unchanged outside a LoRA method's forward.
:func:`fold` adds ``scaling * B A`` to the weights (merge: no inference overhead).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

NAMES = {"q": ("q_proj", "query", "q"), "k": ("k_proj", "key", "k"), "v": ("v_proj", "value", "v"),
         "o": ("out_proj", "o_proj")}
FUSED = ("qkv", "in_proj", "qkv_proj")
ORDER = ("q", "k", "v")
# the update's scale from (alpha, rank): Hu et al. divide by r, CLIP-LoRA by sqrt(r)
RANK_SCALINGS = {"linear": lambda alpha, rank: alpha / rank, "sqrt": lambda alpha, rank: alpha / math.sqrt(rank)}


class LoRAFactors(nn.Module):
    """(A, B) pairs for blocks of a projection's output; block j covers rows [offset_j, offset_j + size_j)."""

    def __init__(self, in_features: int, out_features: int, blocks: list[tuple[int, int]],
                 rank: int, scaling: float, dropout: float):
        super().__init__()
        if rank < 1:
            raise UserError(f"LoRA rank must be at least 1, got {rank}")
        self.in_features, self.out_features, self.blocks = in_features, out_features, list(blocks)
        self.scaling = float(scaling)
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for _, size in self.blocks:
            a = torch.empty(rank, in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.A.append(nn.Parameter(a))
            self.B.append(nn.Parameter(torch.zeros(size, rank)))
        self.dropout = nn.Dropout(dropout)

    def block_out(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """(..., in) -> (..., size_j): the update of block j's output (dropout on the input)."""
        h = self.dropout(x)
        return (h @ self.A[j].to(h.dtype).T) @ self.B[j].to(h.dtype).T * self.scaling

    def delta_out(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): the update of the whole output, zero outside the blocks."""
        h = self.dropout(x)
        out = x.new_zeros(*x.shape[:-1], self.out_features)
        for j, (offset, size) in enumerate(self.blocks):
            out[..., offset:offset + size] = (h @ self.A[j].to(h.dtype).T) @ self.B[j].to(h.dtype).T * self.scaling
        return out

    def delta_weight(self) -> torch.Tensor:
        """(out, in): the dense update, for merging."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.A[0].dtype, device=self.A[0].device)
        for j, (offset, size) in enumerate(self.blocks):
            w[offset:offset + size] = self.B[j] @ self.A[j] * self.scaling
        return w


class LoRALinear(nn.Module):
    """``base(x) + update(x)`` for an ``nn.Linear`` (whole output or q/k/v blocks of a fused one)."""

    def __init__(self, base: nn.Linear, factors: LoRAFactors):
        super().__init__()
        object.__setattr__(self, "base", base)  # plain references: see the module docstring
        object.__setattr__(self, "factors", factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.factors.delta_out(x)


class LoRAMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with LoRA on the q/k/v blocks of ``in_proj_weight``."""

    def __init__(self, base: nn.MultiheadAttention, factors: LoRAFactors):
        super().__init__()
        if base.bias_k is not None or base.add_zero_attn or not base._qkv_same_embed_dim:
            raise UserError("LoRA supports nn.MultiheadAttention without bias_k/bias_v/add_zero_attn and "
                            "with equal q/k/v widths")
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "factors", factors)

    def _project(self, x: torch.Tensor, block: int) -> torch.Tensor:
        m, e = self.base, self.base.embed_dim
        w = m.in_proj_weight[block * e:(block + 1) * e]
        b = m.in_proj_bias[block * e:(block + 1) * e] if m.in_proj_bias is not None else None
        out = F.linear(x, w, b)  # (B, T, E)
        for j, (offset, _) in enumerate(self.factors.blocks):
            if offset == block * e:
                out = out + self.factors.block_out(x, j)
        return out

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        m = self.base
        if not m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        bsz, tgt, e = query.shape
        src, heads = key.shape[1], m.num_heads
        q, k, v = (self._project(x, i) for i, x in enumerate((query, key, value)))
        q, k, v = (t.view(bsz, -1, heads, e // heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        mask = _additive_mask(attn_mask, key_padding_mask, bsz, heads, tgt, src, q.dtype)
        causal = bool(is_causal and mask is None)
        p = m.dropout if self.factors.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        out = m.out_proj(out.transpose(1, 2).reshape(bsz, tgt, e))  # (B, T, E)
        if not m.batch_first:
            out = out.transpose(0, 1)
        return out, None


def _additive_mask(attn_mask, key_padding_mask, bsz, heads, tgt, src, dtype):
    """PyTorch MHA mask semantics (bool True = blocked, float = added) as one additive mask."""
    mask = None
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        m = m.to(dtype)
        mask = m.view(bsz, heads, tgt, src) if m.dim() == 3 else m  # (L, S) broadcasts
    if key_padding_mask is not None:
        k = key_padding_mask
        if k.dtype == torch.bool:
            k = torch.zeros(k.shape, dtype=dtype, device=k.device).masked_fill(k, float("-inf"))
        k = k.to(dtype).view(bsz, 1, 1, src)
        mask = k if mask is None else mask + k
    return mask


@dataclass
class Target:
    """One wrapped projection: where it sits (``parent._modules[attr]``) and its qualified name."""

    name: str  # qualified name from the model root, e.g. "visual.model.transformer.resblocks.0.attn"
    parent: nn.Module
    attr: str
    base: nn.Module
    wrapper: nn.Module
    factors: LoRAFactors


def _blocks(which: list[str], width: int) -> list[tuple[int, int]]:
    return [(ORDER.index(w) * width, width) for w in ORDER if w in which]


def find_targets(root: nn.Module, prefix: str, targets: list[str], rank: int, scaling: float,
                 dropout: float) -> list[Target]:
    """Wrap the attention projections named in ``targets`` (q, k, v, o) under ``root``; each
    update is ``scaling * B A`` (see :data:`RANK_SCALINGS`)."""
    qkv = [t for t in targets if t in ORDER]
    found = []
    for name, module in root.named_modules():
        for attr, child in list(module._modules.items()):
            if child is None:
                continue
            full = f"{prefix}{name + '.' if name else ''}{attr}"
            if isinstance(child, nn.MultiheadAttention) and qkv:
                width = child.embed_dim
                f = LoRAFactors(width, 3 * width, _blocks(qkv, width), rank, scaling, dropout)
                found.append(Target(full, module, attr, child, LoRAMultiheadAttention(child, f), f))
            elif isinstance(child, nn.Linear):
                blocks = None
                if attr in FUSED and qkv and child.out_features % 3 == 0:
                    blocks = _blocks(qkv, child.out_features // 3)
                elif any(attr in NAMES[t] for t in targets):
                    blocks = [(0, child.out_features)]
                if blocks:
                    f = LoRAFactors(child.in_features, child.out_features, blocks, rank, scaling, dropout)
                    found.append(Target(full, module, attr, child, LoRALinear(child, f), f))
    return found


@contextmanager
def installed(targets: list[Target]):
    """Swap the wrappers into their towers for the duration of a forward pass."""
    for t in targets:
        t.parent._modules[t.attr] = t.wrapper
    try:
        yield
    finally:
        for t in reversed(targets):
            t.parent._modules[t.attr] = t.base


@torch.no_grad()
def fold(model: nn.Module, targets: list[Target]) -> nn.Module:
    """Add each target's update into the weights of the same-named module of ``model`` (a copy)."""
    for t in targets:
        module = model.get_submodule(t.name)
        weight = module.in_proj_weight if isinstance(module, nn.MultiheadAttention) else module.weight
        weight.add_(t.factors.delta_weight().to(device=weight.device, dtype=weight.dtype))
    return model
