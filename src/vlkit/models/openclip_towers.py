"""open_clip towers: any open_clip architecture, its pretrained tags or a local checkpoint.

``openclip:NAME[@TAG_OR_FILE]`` builds the open_clip model class (CLIP or CustomTextCLIP) from
the architecture config (open_clip's JSON configs, or one registered with
:func:`register_openclip_arch`), loads weights from a pretrained tag (cached or downloaded, see
:mod:`vlkit.models.network`) or a local .pt/.bin/.safetensors state dict (``torch.load`` with
``weights_only=True``), then splits it into a vision and a text tower. The towers keep open_clip's
modules and parameter names, and open the insides prompt methods need (see
:mod:`vlkit.models.towers`). ``openclip_vit`` / ``openclip_text`` put the same towers into a
composed config. Not supported: CoCa (multimodal decoder) and open_clip's Hugging Face text
towers (``hf_model_name``); use ``hf:`` or a composed ``hf_encoder`` text tower instead.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from ..config import build
from ..errors import UserError, missing_file, unknown_name
from . import network
from .towers import TEXT_TOWERS, VISION_TOWERS, BuildContext, PromptableTextTower, TokenVisionTower, VisionTower
from .towers import seeded

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
_EXTRA_ARCHS: dict[str, dict] = {}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")


def register_openclip_arch(name: str, model_cfg: dict) -> None:
    """Make ``openclip:NAME`` know an architecture given as an open_clip model config dict."""
    _EXTRA_ARCHS[name] = copy.deepcopy(dict(model_cfg))


def openclip_arch_names() -> list[str]:
    import open_clip

    return sorted(set(open_clip.list_models()) | set(_EXTRA_ARCHS))


def _is_file_ref(tag: str) -> bool:
    return os.sep in tag or tag.endswith(_CHECKPOINT_SUFFIXES) or Path(tag).expanduser().is_file()


def openclip_config(arch: str, tag: str | None = None) -> dict:
    """The vlkit model config for ``openclip:ARCH[@TAG_OR_FILE]``: resolves names, no downloads."""
    import open_clip

    arch = arch.replace("/", "-")
    model_cfg = copy.deepcopy(_EXTRA_ARCHS.get(arch)) or open_clip.get_model_config(arch)
    if model_cfg is None:
        raise unknown_name("open_clip architecture", arch, openclip_arch_names())
    mean, std = OPENAI_MEAN, OPENAI_STD
    if tag and _is_file_ref(tag):
        path = Path(tag).expanduser()
        if not path.is_file():
            raise missing_file(tag, "open_clip checkpoint file")
        tag = str(path.resolve())
    elif tag:
        pcfg = open_clip.get_pretrained_cfg(arch, tag)
        if not pcfg:
            raise unknown_name(
                f"open_clip pretrained tag for {arch}", tag, open_clip.list_pretrained_tags_by_model(arch),
                hint=f"or load a local checkpoint: openclip:{arch}@/path/to/checkpoint.pt",
            )
        if pcfg.get("quick_gelu"):  # the tag was trained with QuickGELU: build it that way
            model_cfg["quick_gelu"] = True
        mean, std = list(pcfg.get("mean") or mean), list(pcfg.get("std") or std)
    return {"builder": "openclip", "arch": arch, "model_cfg": model_cfg, "pretrained": tag,
            "mean": list(mean), "std": list(std)}


def openclip_weights(arch: str, tag: str) -> str:
    """Local path of the weights for a tag or file: from the caches, else downloaded (fails fast offline)."""
    if Path(tag).is_file():
        return tag
    import open_clip
    from open_clip.pretrained import _get_safe_alternatives

    pcfg = open_clip.get_pretrained_cfg(arch, tag)
    hub, url = pcfg.get("hf_hub", ""), pcfg.get("url", "")
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        for name in [*_get_safe_alternatives(filename), filename]:
            found = network.hf_cached_file(repo, name)
            if found:
                return found
    if url:
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached.is_file():
            return str(cached)
    hint = f"download the checkpoint on a machine with network and load it with openclip:{arch}@/path/to/checkpoint.pt"
    network.require_network(f"open_clip weights {arch}@{tag}", hint, None if hub else urlparse(url).hostname)
    try:
        return open_clip.download_pretrained(pcfg)
    except Exception as e:
        raise UserError(f"downloading open_clip weights {arch}@{tag} failed ({str(e).splitlines()[0]}); {hint}") from None


def _make_tokenizer(text_cfg: dict, assets: Path | None):
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    context = int(text_cfg.get("context_length", 77))
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return SimpleTokenizer(context_length=context, **kwargs)
    if assets is not None and (assets / "tokenizer_config.json").is_file():
        source = assets
    else:
        source = network.hf_snapshot(name, f"the tokenizer {name}", "save the model once online (DualEncoder.save keeps the tokenizer)",
                                     patterns=["*.json", "*.model", "*.txt"])
    return HFTokenizer(str(source), context_length=context, tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs)


def _fast_block_ok(block: nn.Module) -> bool:
    """open_clip's plain pre-norm block with an ``nn.MultiheadAttention`` of fused q/k/v."""
    from open_clip.transformer import ResidualAttentionBlock

    attn = getattr(block, "attn", None)
    return (type(block) is ResidualAttentionBlock and type(attn) is nn.MultiheadAttention
            and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn
            and not hasattr(block, "ln_1_kv"))


def resblock(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
             batch_first: bool = True) -> torch.Tensor:
    """One open_clip residual block on batch-first ``x`` (B, N, W): open_clip's math, fewer copies.

    ``nn.MultiheadAttention`` turns batch-first input sequence-first, splits q/k/v through
    several reshapes and copies back: about a tenth of a small ViT's training step on a CPU.
    Here q/k/v are strided views of one projection, fed to the same
    ``scaled_dot_product_attention`` with the same weights, mask and dropout; the output
    equals open_clip's up to float rounding (a test compares them). Any other block (LoRA's
    attention, CustomResidualAttentionBlock, cross-attention, a boolean mask) runs its own
    forward (sequence-first when the transformer is not ``batch_first``).
    """
    if not _fast_block_ok(block) or (attn_mask is not None and not attn_mask.is_floating_point()):
        if batch_first:
            return block(x, attn_mask=attn_mask)
        return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    attn = block.attn
    b, n, w = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # (B, N, 3W)
    q, k, v = qkv.view(b, n, 3, heads, w // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, W/H)
    mask = attn_mask.to(q.dtype) if attn_mask is not None else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=attn.dropout if attn.training else 0.0)
    out = attn.out_proj(out.transpose(1, 2).reshape(b, n, w))  # (B, N, W)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def resblock_rows(block: nn.Module, x: torch.Tensor, index: torch.Tensor | None = None,
                  attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A fast block's output (B, Q, W) at some positions only: the last block before a pooling
    that reads one token (the ViT's CLS, the text tower's EOT).

    Keys and values come from every position and queries from the kept ones, so the kept rows
    equal :func:`resblock`'s at those positions up to float rounding; the other rows' attention
    and MLP, which the pooling throws away, are never computed (about five sixths of the
    block). ``index`` (B, Q): the positions to keep (default: the first, the CLS token).
    ``attn_mask``: an additive float mask for the kept rows, (B, Q, N) or broadcastable.
    The caller checks :func:`_fast_block_ok`.
    """
    attn = block.attn
    b, n, w = x.shape
    heads = attn.num_heads
    if index is None:
        rows = x[:, :1]  # (B, 1, W)
    else:
        rows = x.gather(1, index[..., None].expand(-1, -1, w))  # (B, Q, W)
    bias = attn.in_proj_bias
    q = F.linear(block.ln_1(rows), attn.in_proj_weight[:w], None if bias is None else bias[:w])  # (B, Q, W)
    kv = F.linear(block.ln_1(x), attn.in_proj_weight[w:], None if bias is None else bias[w:])  # (B, N, 2W)
    q = q.view(b, -1, heads, w // heads).transpose(1, 2)  # (B, H, Q, W/H)
    k, v = kv.view(b, n, 2, heads, w // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, W/H)
    mask = attn_mask.to(q.dtype)[:, None] if attn_mask is not None else None  # (B, 1, Q, N)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=attn.dropout if attn.training else 0.0)
    out = attn.out_proj(out.transpose(1, 2).reshape(b, -1, w))  # (B, Q, W)
    rows = rows + block.ls_1(out)
    return rows + block.ls_2(block.mlp(block.ln_2(rows)))


class OpenCLIPVisionTower(TokenVisionTower):
    """open_clip's VisionTransformer, block by block through :func:`resblock` (open_clip's own
    forward where the pooling or gradient checkpointing needs it)."""

    kind = "open_clip ViT"

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.model = visual
        self.width = visual.transformer.width
        self.n_layers = len(visual.transformer.resblocks)
        self.output_dim = visual.proj.shape[1] if visual.proj is not None else self.width
        self.supports_prompts = visual.attn_pool is None and visual.pool_type in ("tok", "avg")
        self._batch_first = getattr(visual.transformer, "batch_first", True)

    def forward(self, images, return_tokens: bool = False):
        if return_tokens:
            return self.forward_prompted(images, None, return_tokens=True)
        m = self.model
        if m.attn_pool is not None or getattr(m.transformer, "grad_checkpointing", False):
            out = m(images)
            return out[0] if isinstance(out, tuple) else out
        x = self._pre_norm(self._embed(images))  # (B, T, W)
        last = m.transformer.resblocks[-1] if self.n_layers else None
        cls_only = m.pool_type == "tok" and last is not None and _fast_block_ok(last)
        for i in range(self.n_layers - 1 if cls_only else self.n_layers):
            x = self._block(i, x)
        if cls_only:  # the pooling reads the CLS token alone: the last block computes only it
            x = resblock_rows(last, x)  # (B, 1, W)
        pooled, _ = m._pool(x)
        return pooled @ m.proj if m.proj is not None else pooled

    def forward_prompted(self, images, prompts=None, return_tokens: bool = False):
        if not self.supports_prompts:
            raise UserError("this open_clip vision tower pools with attention; it takes no prompts")
        return super().forward_prompted(images, prompts, return_tokens)

    def _embed(self, images):
        m = self.model
        x = m.conv1(images)  # (B, W, g, g)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, g*g, W)
        cls = m.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + m.positional_embedding.to(x.dtype)  # (B, 1 + g*g, W)
        return m.patch_dropout(x)

    def _pre_norm(self, x):
        return self.model.ln_pre(x)

    def _block(self, i, x):
        return resblock(self.model.transformer.resblocks[i], x, batch_first=self._batch_first)

    def _pool(self, x):
        pooled, tokens = self.model._pool(x)
        if self.model.proj is not None:
            pooled, tokens = pooled @ self.model.proj, tokens @ self.model.proj
        return pooled, tokens


class OpenCLIPModuleVisionTower(VisionTower):
    """open_clip image towers without tokens exposed (ModifiedResNet, timm): forward only."""

    kind = "open_clip"

    def __init__(self, visual: nn.Module, output_dim: int):
        super().__init__()
        self.model = visual
        self.kind = f"open_clip {type(visual).__name__}"
        self.width = self.output_dim = output_dim
        self.n_layers = 4 if hasattr(visual, "layer4") else 0  # ResNet stages; 0: not known

    def forward(self, images, return_tokens: bool = False):
        if return_tokens:
            raise UserError(f"the {self.kind} vision tower gives no token features; use a ViT architecture")
        return self.model(images)


class OpenCLIPTextTower(PromptableTextTower):
    """open_clip's text transformer (from CLIP's attributes or a TextTransformer module)."""

    kind = "open_clip"

    def __init__(self, src: nn.Module, text_cfg: dict, assets: Path | None = None):
        super().__init__()
        if getattr(src, "cls_emb", None) is not None:
            raise UserError("open_clip text towers with a class embedding (CoCa) are not supported")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection  # (W, D) Parameter, Linear, or None
        self.register_buffer("attn_mask", src.attn_mask, persistent=False)
        self.pool_type = getattr(src, "text_pool_type", getattr(src, "pool_type", "argmax"))
        self.eos_id = getattr(src, "text_eos_id", getattr(src, "eos_id", None))
        self.pooling = {"argmax": "eot (argmax id)", "eos": "first eos", "last": "last token"}.get(self.pool_type, self.pool_type)
        self.text_cfg, self._assets, self._tokenizer = dict(text_cfg), assets, None
        self.width = self.transformer.width
        self.n_layers = len(self.transformer.resblocks)
        self.context_length = self.positional_embedding.shape[0]
        self.pad_id = int(text_cfg.get("pad_id", 0))
        proj = self.text_projection
        self.output_dim = self.width if proj is None else (proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    def tokenize(self, texts):
        if self._tokenizer is None:
            self._tokenizer = _make_tokenizer(self.text_cfg, self._assets)
        ids = self._tokenizer(list(texts)).long()  # (B, context_length)
        return {"input_ids": ids, "attention_mask": self.default_mask(ids)}

    def default_mask(self, input_ids):
        if self.pool_type == "argmax":  # valid up to and including the EOT token (the largest id)
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            return (pos[None, :] <= input_ids.argmax(dim=-1, keepdim=True)).long()
        return (input_ids != self.pad_id).long()

    def save_assets(self, path: Path) -> None:
        if self.text_cfg.get("hf_tokenizer_name"):
            if self._tokenizer is None:
                self._tokenizer = _make_tokenizer(self.text_cfg, self._assets)
            self._tokenizer.tokenizer.save_pretrained(str(path))

    def forward(self, tokens, return_tokens: bool = False):
        """Plain forward, with trailing padding trimmed when that cannot change the result.

        open_clip pads every caption to the full context (77 for CLIP); under the causal mask a
        position sees only those before it, so with EOT/EOS pooling the columns after the
        batch's last EOT never reach the pooled feature. Dropping them makes the text tower
        several times cheaper on short captions and leaves the output unchanged (up to float
        rounding of smaller matrix products). Under ``torch.compile`` the full context runs: the
        trimmed length is data (``int()`` of a tensor), a graph break and a recompile per length.
        """
        tokens = self.as_tokens(tokens)
        trim = not torch.compiler.is_compiling()
        if trim and self.attn_mask is not None and self.pool_type in ("argmax", "eos"):
            n = int(tokens["attention_mask"].sum(dim=1).max())
            tokens = {k: v[:, :n] for k, v in tokens.items()}  # (B, n)
        return super().forward(tokens, return_tokens=return_tokens)

    def embed_tokens(self, input_ids):
        return self.token_embedding(input_ids)  # (B, L, W), no positions

    def _input(self, embeds, tokens):
        return embeds + self.positional_embedding[: embeds.shape[1]].to(embeds.dtype)

    def _mask(self, x, tokens):
        length = x.shape[1]
        return None if self.attn_mask is None else self.attn_mask[:length, :length]

    def _block(self, i, x, mask):
        return resblock(self.transformer.resblocks[i], x, attn_mask=mask)

    def _pooled_last_block(self, tokens, mask):
        """The last block at each caption's EOT/EOS alone: the pooling reads nothing else."""
        last = self.transformer.resblocks[-1]
        if self.pool_type not in ("argmax", "eos") or not _fast_block_ok(last):
            return None
        if mask is not None and (not mask.is_floating_point() or mask.dim() != 2):
            return None  # a boolean or per-caption mask: the full block (kept rows index an (L, L) mask)
        ids = tokens["input_ids"]
        if self.pool_type == "argmax":
            index = ids.argmax(dim=-1)  # (B,)
        else:
            index = (ids == self.eos_id).int().argmax(dim=-1)
        index = index[:, None]  # (B, 1)
        row_mask = None if mask is None else mask[index]  # (B, 1, L): each kept row's causal row

        def pooled(x):  # (B, L, W) -> (B, D)
            return self._project(self.ln_final(resblock_rows(last, x, index, row_mask)[:, 0]))

        return pooled

    def _project(self, x):
        proj = self.text_projection
        if isinstance(proj, nn.Linear):
            return proj(x)
        return x if proj is None else x @ proj

    def _finish(self, x, tokens):
        from open_clip.transformer import text_global_pool

        x = self.ln_final(x)  # (B, L, W)
        pooled = text_global_pool(x, tokens["input_ids"], self.pool_type, eos_token_id=self.eos_id)
        return self._project(pooled), self._project(x)


def _image_size(vision_cfg: dict) -> int:
    size = vision_cfg.get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def wrap_visual(visual: nn.Module, embed_dim: int) -> VisionTower:
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return OpenCLIPVisionTower(visual)
    return OpenCLIPModuleVisionTower(visual, embed_dim)


@dataclass
class OpenCLIPModelConfig:
    builder: str = "openclip"
    arch: str = ""
    model_cfg: dict = field(default_factory=dict)  # an open_clip model config (embed_dim, vision_cfg, text_cfg, ...)
    pretrained: str | None = None  # a tag or a local checkpoint file
    mean: list[float] = field(default_factory=lambda: list(OPENAI_MEAN))
    std: list[float] = field(default_factory=lambda: list(OPENAI_STD))
    init_seed: int = 0  # random init (from scratch) is reproducible
    source: object = None


def build_openclip(config: dict, weights: bool = True, assets: Path | None = None):
    """Build a DualEncoder from an ``openclip`` config (see :func:`openclip_config`)."""
    from open_clip import CLIP, CustomTextCLIP, load_checkpoint

    from .dual_encoder import DualEncoder

    cfg = build(OpenCLIPModelConfig, config)
    model_cfg = copy.deepcopy(cfg.model_cfg)
    if "multimodal_cfg" in model_cfg:
        raise UserError(f"open_clip architecture {cfg.arch} is a CoCa model; vlkit supports contrastive CLIP models only")
    text_cfg = dict(model_cfg.get("text_cfg", {}))
    if text_cfg.get("hf_model_name"):
        raise UserError(f"open_clip architecture {cfg.arch} uses a Hugging Face text tower; load it with hf: or a composed config")
    custom = model_cfg.pop("custom_text", False)
    path = openclip_weights(cfg.arch, cfg.pretrained) if weights and cfg.pretrained else None  # fail fast offline
    try:
        with seeded(cfg.init_seed):
            model = (CustomTextCLIP if custom else CLIP)(**model_cfg)
    except TypeError as e:
        raise UserError(f"open_clip config for {cfg.arch} is invalid ({e}); check its keys") from None
    if path is not None:
        try:
            load_checkpoint(model, path, strict=True, weights_only=True)
        except Exception as e:
            from .hf_common import refused_pickle

            refused = refused_pickle(e, path, "open_clip checkpoint")
            if refused is not None:
                raise refused from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"checkpoint {path} does not fit open_clip architecture {cfg.arch} ({first[:300]}); "
                            "check the architecture name or the file") from None
    embed_dim = int(model_cfg["embed_dim"])
    text = OpenCLIPTextTower(model.text if custom else model, text_cfg, assets / "text" if assets else None)
    return DualEncoder(
        wrap_visual(model.visual, embed_dim), text, embed_dim=embed_dim,
        image_size=_image_size(model_cfg.get("vision_cfg", {})), mean=cfg.mean, std=cfg.std,
        config=config, logit_scale=model.logit_scale, logit_bias=model.logit_bias,
    )


@dataclass
class OpenCLIPViTConfig:
    type: str = "openclip_vit"
    cfg: dict = field(default_factory=dict)  # open_clip CLIPVisionCfg fields (width, layers, patch_size, ...)
    output_dim: int | None = None  # a projection inside the tower; None: pooled width, the head projects
    quick_gelu: bool = False


def _checked_cfg(cfg: dict, cls, tower: str) -> dict:
    """``cfg`` with only keys of open_clip's ``cls`` (CLIPVisionCfg / CLIPTextCfg), else one line."""
    import dataclasses

    valid = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(set(cfg) - valid)
    if stray:
        raise UserError(f"unknown {tower} cfg key {stray[0]!r} (open_clip {cls.__name__}); "
                        f"valid keys: {', '.join(sorted(valid))}")
    return dict(cfg)


@VISION_TOWERS.register("openclip_vit")
class OpenCLIPViTType:
    Config = OpenCLIPViTConfig

    @staticmethod
    def build(cfg: OpenCLIPViTConfig, ctx: BuildContext) -> VisionTower:
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        vcfg = dict(_checked_cfg(cfg.cfg, CLIPVisionCfg, "openclip_vit"), image_size=ctx.image_size)
        visual = _build_vision_tower(cfg.output_dim or int(vcfg.get("width", 768)), vcfg, cfg.quick_gelu)
        if cfg.output_dim is None:
            visual.proj = None
        return wrap_visual(visual, cfg.output_dim or 0)


@dataclass
class OpenCLIPTextConfig:
    type: str = "openclip_text"
    cfg: dict = field(default_factory=dict)  # open_clip CLIPTextCfg fields (width, layers, heads, context_length, ...)
    output_dim: int | None = None  # None: no projection inside the tower (the head projects)
    quick_gelu: bool = False


@TEXT_TOWERS.register("openclip_text")
class OpenCLIPTextType:
    Config = OpenCLIPTextConfig

    @staticmethod
    def build(cfg: OpenCLIPTextConfig, ctx: BuildContext) -> OpenCLIPTextTower:
        from open_clip.model import CLIPTextCfg, _build_text_tower

        tcfg = _checked_cfg(cfg.cfg, CLIPTextCfg, "openclip_text")
        if cfg.output_dim is None:
            tcfg["proj_type"] = "none"
        module = _build_text_tower(cfg.output_dim or int(tcfg.get("width", 512)), tcfg, cfg.quick_gelu)
        return OpenCLIPTextTower(module, tcfg, ctx.assets)

