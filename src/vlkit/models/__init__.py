"""vlkit.models: dual encoders (CLIP-style) from presets, open_clip, Hugging Face or composed towers.

Public API::

    model = vlkit.models.load("preset:moji-lit-s")      # or openclip:..., hf:..., a saved dir, a dict
    model.encode_image(images)                          # (B, D), L2-normalised
    model.encode_text(["a cat"])                        # (B, D), L2-normalised
    model.save("out/model"); vlkit.models.load("out/model")
    vlkit.models.list_presets(); vlkit.models.describe("preset:tiny-clip")

Heavy libraries (open_clip, transformers, timm) are imported only when a model needs them.
"""

from __future__ import annotations

from .loading import PRESETS, describe, list_presets, load, resolve

_LAZY = {
    "DualEncoder": ("dual_encoder", "DualEncoder"),
    "build_model": ("builders", "build_model"),
    "register_openclip_arch": ("openclip_towers", "register_openclip_arch"),
    "VisionTower": ("towers", "VisionTower"),
    "TextTower": ("towers", "TextTower"),
    "TokenVisionTower": ("towers", "TokenVisionTower"),
    "PromptableTextTower": ("towers", "PromptableTextTower"),
    "VISION_TOWERS": ("towers", "VISION_TOWERS"),
    "TEXT_TOWERS": ("towers", "TEXT_TOWERS"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["load", "resolve", "describe", "list_presets", "PRESETS", *_LAZY]
