"""``vlkit.models.load(spec)``: one entry point for every way to name a model.

Specs:
- ``preset:NAME`` (or a bare preset name): a data file in ``vlkit/models/presets/NAME.yaml``
  holding either ``spec:`` (another spec string) or ``model:`` (a config dict);
- ``openclip:ARCH`` (random init), ``openclip:ARCH@TAG`` (pretrained, needs the network unless
  cached), ``openclip:ARCH@/path/ckpt.pt|.bin|.safetensors`` (a local state dict);
- ``hf:NAME_OR_DIR``: a Hugging Face CLIP or SigLIP model (directory, or hub name: cache/network);
- a directory written by :meth:`DualEncoder.save`;
- a config dict (``builder: composed`` by default), or a .yaml/.json file holding one.

``load(spec, weights=False)`` builds the skeleton only (no downloads): ``describe`` uses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import build, read_yaml
from ..errors import UserError
from ..recipes import command_writing
from ..registry import Registry

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: Registry = Registry("model preset")


@dataclass
class Preset:
    """A preset data file: a description plus either ``spec`` (a spec string) or ``model`` (a config)."""

    description: str = ""
    spec: str | None = None
    model: dict | None = None
    needs_network: bool = False  # true for pretrained tags / hub names (informational)


def _load_presets() -> None:
    if len(PRESETS):
        return
    for file in sorted(PRESET_DIR.glob("*.yaml")):
        preset = build(Preset, read_yaml(file), prefix=f"{file.name}: ")
        if (preset.spec is None) == (preset.model is None):
            raise ValueError(f"preset file {file} must hold exactly one of spec or model")
        PRESETS.add(file.stem, preset)


def list_presets() -> list[dict]:
    """One row per preset: name, description, what it loads, whether it needs the network."""
    _load_presets()
    return [{"name": name, "description": p.description, "spec": p.spec or f"{p.model.get('builder', 'composed')} config",
             "needs_network": p.needs_network} for name, p in PRESETS.items()]


def _with_source(config: dict, source: str) -> dict:
    config = dict(config)
    if not config.get("source"):
        config["source"] = source
    return config


def resolve(spec) -> dict | Path:
    """Turn a spec into a config dict (or a saved-model directory) without building anything."""
    from .builders import _register_all

    _register_all()
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"model spec must be a non-empty string or a config mapping, got {spec!r}")
    spec = spec.strip()
    if spec.startswith("preset:") or (":" not in spec and _is_preset(spec)):
        name = spec.split(":", 1)[1] if spec.startswith("preset:") else spec
        _load_presets()
        preset = PRESETS.get(name)
        if preset.model is not None:
            return _with_source(preset.model, f"preset:{name}")
        target = resolve(preset.spec)
        return _with_source(target, f"preset:{name}") if isinstance(target, dict) else target
    if spec.startswith("openclip:"):
        from .openclip_towers import openclip_config

        arch, at, tag = spec[len("openclip:"):].partition("@")
        if not arch:
            raise UserError("openclip: needs an architecture name, e.g. openclip:ViT-B-32@laion2b_s34b_b79k")
        if at and not tag.strip():  # "ViT-B-32@" would build a random model where weights were asked for
            raise UserError(f"{spec!r} has an empty tag after '@'; name a pretrained tag or a checkpoint file "
                            f"(openclip:{arch}@laion2b_s34b_b79k), or drop the '@' for a randomly initialised model")
        return _with_source(openclip_config(arch, tag or None), spec)
    if spec.startswith("hf:"):
        from .hf_towers import hf_config

        return hf_config(spec[3:])
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
        data = json.loads(path.read_text()) if path.suffix == ".json" else read_yaml(path)
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a model config mapping")
        return _with_source(data.get("model", data), str(path))
    if not path.exists() and (len(path.parts) > 1 or spec.startswith((".", "~"))):
        command = command_writing(path)
        how = (f"run `{command}` first" if command else
               "check the path, or train one first (`vlkit pretrain RECIPE` writes OUT_DIR/model)")
        raise UserError(f"model folder {spec} not found; {how}")
    _load_presets()
    raise UserError(
        f"unknown model spec {spec!r}; use preset:NAME (one of {', '.join(PRESETS.names())}), "
        "openclip:ARCH[@TAG_OR_FILE], hf:NAME_OR_DIR, a saved model directory or a config file"
    )


def _is_preset(name: str) -> bool:
    _load_presets()
    return name in PRESETS


def load(spec, weights: bool = True):
    """Load a :class:`DualEncoder` from any spec (see the module docstring); eval mode."""
    from .builders import build_model
    from .dual_encoder import DualEncoder

    if isinstance(spec, DualEncoder):
        return spec
    resolved = resolve(spec)
    if isinstance(resolved, Path):
        if weights:
            return DualEncoder.load(resolved)
        from .dual_encoder import read_meta

        return build_model(read_meta(resolved)["config"], weights=False, assets=resolved / "assets")
    return build_model(resolved, weights=weights)


def describe(spec) -> dict:
    """Parameter counts per part (total/trainable, frozen), widths, embed dim, image size.

    Builds only the skeleton on the meta device (no downloads, no memory, no init cost); a model
    instance is described as it is.
    """
    import torch

    from .dual_encoder import DualEncoder

    if isinstance(spec, DualEncoder):
        model = spec
    else:
        with torch.device("meta"):
            model = load(spec, weights=False)
    counts = model.parameter_counts()
    v, t = model.visual, model.text
    parts = {
        "visual": {"type": v.kind, "width": v.width, "layers": v.n_layers, "output_dim": v.output_dim,
                   "supports_prompts": bool(v.supports_prompts)},
        "text": {"type": t.kind, "width": t.width, "layers": t.n_layers, "output_dim": t.output_dim,
                 "context_length": t.context_length, "pooling": t.pooling, "supports_prompts": bool(t.supports_prompts)},
        "image_proj": {"type": type(model.image_proj).__name__},
        "text_proj": {"type": type(model.text_proj).__name__},
        "logit_scale": {"value": _scalar(model.logit_scale, exp=True), "bias": _scalar(model.logit_bias)},
    }
    stem = getattr(v, "pretrained", None)  # convvit's frozen pretrained stem: buffers, not parameters
    if stem is not None:
        parts["visual"]["pretrained_stem"] = (f"{v.cfg.pretrained_stem} stages 1-{v.cfg.pretrained_stem_stages} "
                                              f"(frozen, {sum(b.numel() for b in stem.buffers()):,} weights)")
    for name, info in parts.items():
        info.update(params=counts[name]["total"], trainable=counts[name]["trainable"], frozen=model.is_frozen(name))
    return {
        "spec": spec if isinstance(spec, str) else model.config.get("source"),
        "builder": model.config.get("builder", "composed"),
        "embed_dim": model.embed_dim, "image_size": model.image_size,
        "params": sum(c["total"] for c in counts.values()),
        "trainable": sum(c["trainable"] for c in counts.values()),
        "parts": parts,
    }


def _scalar(p, exp: bool = False) -> float | None:
    if p is None or p.is_meta:
        return None
    v = p.detach().reshape(-1)[0]
    return round(float(v.exp() if exp else v), 4)


def dump_yaml(info: dict) -> str:
    """``describe`` output as YAML (for the CLI)."""
    return yaml.safe_dump(info, sort_keys=False)

