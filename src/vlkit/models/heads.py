"""Projection heads: tower features -> the joint embedding space.

A head is trained even when its tower is frozen (LiT: "Zero-Shot Transfer with Locked-image text
Tuning", arXiv 2111.07991, locks one tower and trains the rest), so the engine can cache the
tower's pooled features and train only the head (``DualEncoder.encode_*_pooled`` /
``project_*``). Heads act on the last dimension, so they map token features too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..errors import UserError


@dataclass
class HeadConfig:
    """``linear`` (CLIP's projection), ``mlp`` (Linear-GELU-Linear), ``gated_mlp`` (SAIL's
    alignment layer) or ``identity``."""

    type: Literal["linear", "mlp", "gated_mlp", "identity"] = "linear"
    hidden: int | None = None  # mlp hidden width (default: the output width)
    expansion: int = 8  # gated_mlp hidden width = expansion * input width (SAIL: 8)
    bias: bool = False
    dropout: float = 0.0


def build_head(cfg: HeadConfig, in_dim: int, out_dim: int) -> nn.Module:
    if cfg.type == "identity":
        if in_dim != out_dim:
            raise UserError(
                f"an identity head needs tower width {in_dim} == embed_dim {out_dim}; use a linear head"
            )
        return nn.Identity()
    if cfg.type == "linear":
        head = nn.Linear(in_dim, out_dim, bias=cfg.bias)
        nn.init.normal_(head.weight, std=in_dim**-0.5)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
        return head
    if cfg.type == "gated_mlp":
        return GatedMLP(in_dim, out_dim, cfg.expansion)
    hidden = cfg.hidden or out_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=True),
        nn.GELU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(hidden, out_dim, bias=cfg.bias),
    )


class GatedMLP(nn.Module):
    """SAIL's alignment layer ("Assessing and Learning Alignment of Unimodal Vision and Language
    Models"): two parallel Linear(d -> e*d), ReLU6 on the first gating the second, then
    Linear(e*d -> out). (..., d_in) -> (..., d_out)."""

    def __init__(self, d_in: int, d_out: int, expansion: int = 8):
        super().__init__()
        hidden = expansion * d_in
        self.gate = nn.Linear(d_in, hidden)  # branch 1, through ReLU6
        self.up = nn.Linear(d_in, hidden)  # branch 2, linear
        self.act = nn.ReLU6()
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.out(self.act(self.gate(x)) * self.up(x))  # (..., hidden) -> (..., d_out)
