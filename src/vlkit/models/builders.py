"""Model builders: a config dict -> DualEncoder. One builder per ``builder`` key.

- ``composed`` (default): a vision tower + a text tower from the tower registries
  (:data:`~vlkit.models.towers.VISION_TOWERS`: convvit, cnn, timm, openclip_vit;
  :data:`~vlkit.models.towers.TEXT_TOWERS`: hf_encoder, openclip_text) + projection heads.
- ``openclip``: an open_clip model config (+ tag or checkpoint file).
- ``hf``: a Hugging Face CLIP / SigLIP config (+ directory).

``build_model(config, weights=False)`` builds the skeleton only (no downloads, random init from
``init_seed``); :meth:`DualEncoder.load` then fills it from safetensors. A built model keeps the
resolved config (``model.config``), which rebuilds the same skeleton offline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import build
from ..errors import UserError
from ..registry import Registry
from .heads import HeadConfig, build_head
from .towers import TEXT_TOWERS, VISION_TOWERS, BuildContext, seeded

BUILDERS: Registry = Registry("model builder")


def build_model(config: dict, weights: bool = True, assets: Path | None = None):
    """Build a DualEncoder (in eval mode) from a config dict (``builder`` picks how)."""
    _register_all()
    if not isinstance(config, dict):
        raise UserError(f"a model config must be a mapping, got {type(config).__name__}")
    model = BUILDERS.get(config.get("builder", "composed"))(dict(config), weights, assets)
    return model.eval()


@dataclass
class ComposedConfig:
    """Two towers and two heads. ``vision`` / ``text`` hold ``type`` plus that tower's options."""

    vision: dict = field(default_factory=lambda: {"type": "convvit"})
    text: dict = field(default_factory=lambda: {"type": "hf_encoder"})
    embed_dim: int = 256
    image_size: int = 224
    mean: list[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    std: list[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    image_head: HeadConfig = field(default_factory=HeadConfig)
    text_head: HeadConfig = field(default_factory=HeadConfig)
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP: temperature 0.07
    init_logit_bias: float | None = None  # SigLIP: -10 (with init_logit_scale log 10)
    freeze: list[str] = field(default_factory=list)  # parts to freeze: visual, text, image_proj, ...
    init_seed: int = 0
    builder: str = "composed"
    source: object = None


def _tower(registry: Registry, section: dict, where: str, ctx: BuildContext):
    if not isinstance(section, dict) or "type" not in section:
        raise UserError(f"model config {where} needs a type; one of: {', '.join(registry.names())}")
    kind = registry.get(section["type"])
    cfg = build(kind.Config, section, prefix=f"{where}.")
    return kind.build(cfg, ctx), cfg


def build_composed(config: dict, weights: bool = True, assets: Path | None = None):
    from .dual_encoder import DualEncoder

    cfg = build(ComposedConfig, config)
    with seeded(cfg.init_seed):
        vctx = BuildContext(weights, assets / "visual" if assets else None, cfg.image_size)
        tctx = BuildContext(weights, assets / "text" if assets else None, cfg.image_size)
        visual, vcfg = _tower(VISION_TOWERS, cfg.vision, "vision", vctx)
        text, tcfg = _tower(TEXT_TOWERS, cfg.text, "text", tctx)
        image_proj = build_head(cfg.image_head, visual.output_dim, cfg.embed_dim)
        text_proj = build_head(cfg.text_head, text.output_dim, cfg.embed_dim)
    resolved = asdict(cfg)
    resolved.update(vision=asdict(vcfg), text=asdict(tcfg))  # towers may fill fields (hf_config)
    model = DualEncoder(visual, text, image_proj, text_proj, embed_dim=cfg.embed_dim, image_size=cfg.image_size,
                        mean=cfg.mean, std=cfg.std, config=resolved, logit_scale=cfg.init_logit_scale,
                        logit_bias=cfg.init_logit_bias)
    if cfg.freeze:
        model.freeze(cfg.freeze)
    return model


_REGISTERED = False


def _register_all() -> None:
    """Fill the registries on first use (tower modules import their heavy libraries lazily)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from . import hf_encoder, openclip_towers, vision  # noqa: F401  (register tower types)
    from .hf_towers import build_hf
    from .openclip_towers import build_openclip

    BUILDERS.add("composed", build_composed)
    BUILDERS.add("openclip", build_openclip)
    BUILDERS.add("hf", build_hf)
    _REGISTERED = True
