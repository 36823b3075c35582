"""vlkit's own small vision towers (trainable from scratch on a CPU) and timm backbones.

``convvit``: a conv-stem ViT after "Early Convolutions Help Transformers See Better" (Xiao et al.,
arXiv 2106.14881): stride-2 3x3 conv + norm + activation stages replace the patchify stem, then a
1x1 conv maps to the transformer width; a CLS token, learned positions and pre-norm transformer
blocks follow. At 64 px, three stride-2 stages give an 8x8 grid (64 tokens), which trains in
minutes on two CPU cores yet exposes tokens for prompts and token losses.
Deviations from the paper: GELU instead of ReLU; BatchNorm or GroupNorm (option); three stem
stages sized for 64 px (instead of 4-5 for 224 px) with two convs each by default; pooled output
is the mean of the patch tokens by default (``pool: cls`` takes the CLS token, which stays in the
sequence either way); the residual branches start at zero (``zero_init_residual``, SkipInit-style);
no projection inside the tower (the DualEncoder's image head projects). The last three choices
were measured on openmoji (train split, frozen MiniLM text, 60 steps of batch 128): unseen-concept
zero-shot top-1 0.18 for the paper-like 1-conv stem + 4 blocks + CLS, 0.25 for the defaults here.

``cnn``: a plain small CNN (stride-2 conv stages, global average pool); no tokens, no prompts.

``timm``: any timm model by name, ``pretrained=False`` unless a local weights file is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, missing_file, unknown_name
from .towers import VISION_TOWERS, BuildContext, TokenVisionTower, VisionTower, tower_output


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(8, channels), channels)


def _conv_block(c_in: int, c_out: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _norm2d(norm, c_out), nn.GELU()
    )


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        if width % heads:
            raise UserError(f"convvit width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, d)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, w))  # (B, T, W)
        return x + self.mlp(self.norm2(x))


@dataclass
class ConvViTConfig:
    type: str = "convvit"
    stem_channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # one stride-2 stage each
    stem_convs: int = 2  # convs per stem stage (the first has stride 2)
    width: int = 192
    depth: int = 2
    heads: int = 3
    mlp_ratio: float = 2.0
    norm: Literal["batch", "group"] = "batch"
    pool: Literal["cls", "mean"] = "mean"  # mean of the patch tokens, or the CLS token
    zero_init_residual: bool = True  # blocks start as the identity (SkipInit-style)


@VISION_TOWERS.register("convvit")
class ConvViT(TokenVisionTower):
    """Conv stem -> (B, 1 + g*g, width) tokens -> transformer blocks -> LN -> mean of patches (or CLS)."""

    kind = "convvit"
    Config = ConvViTConfig

    def __init__(self, cfg: ConvViTConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.width, self.n_layers, self.output_dim = cfg.width, cfg.depth, cfg.width
        stride = 2 ** len(cfg.stem_channels)
        if image_size % stride:
            raise UserError(f"convvit image_size {image_size} must be divisible by {stride} (2 ** len(stem_channels))")
        self.grid = image_size // stride
        chans = [3, *cfg.stem_channels]
        stem = []
        for a, b in zip(chans[:-1], chans[1:]):
            stem += [_conv_block(a, b, 2, cfg.norm)] + [_conv_block(b, b, 1, cfg.norm) for _ in range(cfg.stem_convs - 1)]
        self.stem = nn.Sequential(*stem, nn.Conv2d(chans[-1], cfg.width, 1))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self._init()

    def _init(self):
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if self.cfg.zero_init_residual:
            for blk in self.blocks:  # each block starts as the identity: the stem's features pass through
                nn.init.zeros_(blk.proj.weight)
                nn.init.zeros_(blk.mlp[-1].weight)

    @classmethod
    def build(cls, cfg: ConvViTConfig, ctx: BuildContext) -> "ConvViT":
        return cls(cfg, ctx.image_size)

    def _embed(self, images):
        x = self.stem(images)  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)  # (B, 1 + g*g, W)

    def _block(self, i, x):
        return self.blocks[i](x)

    def _pool(self, x):
        x = self.norm(x)
        pooled = x[:, 0] if self.cfg.pool == "cls" else x[:, 1:].mean(1)
        return pooled, x[:, 1:]

    def forward(self, images, return_tokens: bool = False):
        x = self._embed(images)
        for blk in self.blocks:
            x = blk(x)
        pooled, tokens = self._pool(x)
        return tower_output(pooled, tokens, return_tokens=return_tokens)


@dataclass
class CNNConfig:
    type: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # one stride-2 stage each
    convs_per_stage: int = 2
    norm: Literal["batch", "group"] = "batch"


@VISION_TOWERS.register("cnn")
class SmallCNN(VisionTower):
    """Stages of (stride-2 conv, then stride-1 convs), global average pool -> (B, channels[-1])."""

    kind = "cnn"
    Config = CNNConfig

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        self.width = self.output_dim = cfg.channels[-1]
        self.n_layers = len(cfg.channels)
        stages, c_in = [], 3
        for c in cfg.channels:
            convs = [_conv_block(c_in, c, 2, cfg.norm)]
            convs += [_conv_block(c, c, 1, cfg.norm) for _ in range(cfg.convs_per_stage - 1)]
            stages.append(nn.Sequential(*convs))
            c_in = c
        self.stages = nn.Sequential(*stages)

    @classmethod
    def build(cls, cfg: CNNConfig, ctx: BuildContext) -> "SmallCNN":
        return cls(cfg)

    def forward(self, images, return_tokens: bool = False):
        if return_tokens:
            raise UserError("the cnn vision tower has no tokens; use a convvit tower for token features")
        return self.stages(images).mean(dim=(2, 3))  # (B, C)


@dataclass
class TimmConfig:
    type: str = "timm"
    name: str = "resnet18"
    pretrained_file: str | None = None  # local weights (.safetensors/.pth/.bin); never downloads
    kwargs: dict = field(default_factory=dict)


@VISION_TOWERS.register("timm")
class TimmTower(VisionTower):
    """A timm backbone with its classifier removed: pooled features (B, num_features)."""

    kind = "timm"
    Config = TimmConfig

    def __init__(self, cfg: TimmConfig, load_file: bool):
        super().__init__()
        import timm

        if not timm.is_model(cfg.name.split(".")[0]):
            raise unknown_name("timm model", cfg.name, timm.list_models())
        kwargs = dict(cfg.kwargs, num_classes=0)
        if load_file and cfg.pretrained_file:
            from pathlib import Path

            if not Path(cfg.pretrained_file).is_file():
                raise missing_file(cfg.pretrained_file, "timm weights file")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(cfg.pretrained_file)})
        else:
            kwargs["pretrained"] = False
        self.cfg = cfg
        self.model = timm.create_model(cfg.name, **kwargs)
        self.width = self.output_dim = int(self.model.num_features)
        stack = getattr(self.model, "blocks", None) or getattr(self.model, "stages", None)
        self.n_layers = len(stack) if stack is not None else 0  # 0: not known

    @classmethod
    def build(cls, cfg: TimmConfig, ctx: BuildContext) -> "TimmTower":
        return cls(cfg, load_file=ctx.weights)

    def forward(self, images, return_tokens: bool = False):
        if return_tokens:
            raise UserError("vlkit does not read token features from timm towers; use convvit or an open_clip ViT")
        return self.model(images)
