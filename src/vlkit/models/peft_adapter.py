"""LoRA adapters in PEFT's file format: write them, and merge them into a DualEncoder's weights.

A folder holds ``adapter_config.json`` (PEFT's ``LoraConfig``) and ``adapter_model.safetensors``
(``base_model.model.<module>.lora_A.weight`` (r, in) / ``.lora_B.weight`` (out, r)), which is
what ``peft.PeftModel.from_pretrained(base, DIR)`` reads, plus ``vlkit_adapter.json`` saying
which model the module names are relative to (PEFT ignores it):

- ``hf``: a Hugging Face CLIP / SigLIP model (``hf:``): the base is transformers'
  ``CLIPModel`` / ``SiglipModel``; vlkit's ``visual.model.`` / ``text.model.`` are its
  ``vision_model.`` / ``text_model.``;
- ``hf_text``: a composed model's Hugging Face text tower (``hf_encoder``, e.g. MiniLM) with
  every update in it: the base is that ``AutoModel`` (``vlkit export --to hf`` writes it);
- ``vlkit``: anything else (a convvit or open_clip tower): module names from the DualEncoder's
  root, for vlkit to load; PEFT's layout, but not loadable onto a Hugging Face model.

An update ``scaling * B A`` on q/k/v blocks of one fused projection (convvit's ``qkv``,
``nn.MultiheadAttention``'s ``in_proj_weight``) is stored as one LoRA of rank ``blocks * r``: A
stacked, B block-diagonal, which is the same update. ``scaling`` follows PEFT:
``lora_alpha / r`` (``use_rslora: false``) or ``lora_alpha / sqrt(r)`` (``use_rslora: true``),
per module through ``rank_pattern`` / ``alpha_pattern`` where a module's rank differs.

:func:`apply_lora` reads such a folder (vlkit's, or one PEFT wrote for the same Hugging Face
model, without ``vlkit_adapter.json``) and adds each update into the weights: the merged model
computes what the adapted one does, at no inference cost (``vlkit eval MODEL --adapter DIR``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, missing_file

CONFIG, WEIGHTS, META = "adapter_config.json", "adapter_model.safetensors", "vlkit_adapter.json"
PEFT_PREFIX = "base_model.model."


@dataclass
class LoRAUpdate:
    """``scaling * B @ A`` added to the weight of the module ``name`` (a DualEncoder path)."""

    name: str
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scaling: float


def stacked(name: str, A: list[torch.Tensor], B: list[torch.Tensor], offsets: list[int], out_features: int,
            scaling: float) -> LoRAUpdate:
    """Several (A_j, B_j) updates of row blocks [offset_j, offset_j + size_j) of one weight as one
    LoRA: A (sum r_j, in) stacked, B (out, sum r_j) block-diagonal."""
    ranks = [a.shape[0] for a in A]
    big_b = torch.zeros(out_features, sum(ranks), dtype=B[0].dtype)
    col = 0
    for b, offset, r in zip(B, offsets, ranks):
        big_b[offset:offset + b.shape[0], col:col + r] = b.detach().cpu()
        col += r
    return LoRAUpdate(name, torch.cat([a.detach().cpu() for a in A]), big_b, float(scaling))


# -- the base a set of updates is relative to --------------------------------------------------------


def _prefixes(model, kind: str) -> dict[str, str]:
    """vlkit module prefix -> the PEFT base's prefix."""
    if kind == "hf":
        return {"visual.model.": "vision_model.", "text.model.": "text_model."}
    if kind == "hf_text":
        return {"text.model.": ""}
    return {"": ""}


def base_kind(model, names: list[str]) -> str:
    """Which model the PEFT files are relative to (see the module docstring)."""
    builder = model.config.get("builder", "composed")
    if builder == "hf" and all(n.startswith(("visual.model.", "text.model.")) for n in names):
        return "hf"
    if builder == "composed" and model.config.get("text", {}).get("type") == "hf_encoder" \
            and all(n.startswith("text.model.") for n in names):
        return "hf_text"
    return "vlkit"


def _base_path(model, kind: str) -> str | None:
    source = model.config.get("source") if kind == "hf" else model.config.get("text", {}).get("source")
    if isinstance(source, dict):
        return source.get("path") or source.get("spec")
    return None if kind == "vlkit" else source


def _map(name: str, prefixes: dict[str, str], reverse: bool = False) -> str | None:
    for ours, theirs in prefixes.items():
        src, dst = (theirs, ours) if reverse else (ours, theirs)
        if name.startswith(src):
            return dst + name[len(src):]
    return None


# -- write --------------------------------------------------------------------------------------------


def write_lora(path: str | Path, model, updates: list[LoRAUpdate], *, rslora: bool, dropout: float = 0.0,
               extra: dict | None = None) -> Path:
    """Write ``updates`` (of ``model``) as a PEFT LoRA folder; returns the folder."""
    from safetensors.torch import save

    from ..engine.checkpoint import atomic_write

    if not updates:
        raise UserError("no LoRA updates to write; adapt at least one attention projection")
    path = Path(path)
    kind = base_kind(model, [u.name for u in updates])
    prefixes = _prefixes(model, kind)
    rank = max(set(u.A.shape[0] for u in updates), key=[u.A.shape[0] for u in updates].count)  # most common
    alpha_of = (lambda s, r: s * math.sqrt(r)) if rslora else (lambda s, r: s * r)
    alpha = alpha_of(updates[0].scaling, rank)
    tensors, targets, rank_pattern, alpha_pattern = {}, [], {}, {}
    for u in updates:
        name = _map(u.name, prefixes)
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = u.A.detach().cpu().float().contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = u.B.detach().cpu().float().contiguous()
        targets.append(name)
        r = u.A.shape[0]
        if r != rank:
            rank_pattern[name] = r
        if not math.isclose(alpha_of(u.scaling, r), alpha, rel_tol=1e-9):
            alpha_pattern[name] = alpha_of(u.scaling, r)
    config = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": _base_path(model, kind),
              "r": rank, "lora_alpha": alpha, "lora_dropout": float(dropout), "use_rslora": bool(rslora),
              "target_modules": targets, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
              "bias": "none", "fan_in_fan_out": False, "modules_to_save": None, "init_lora_weights": True,
              "inference_mode": True}
    meta = {"format": "vlkit.lora_adapter", "base": kind, "prefixes": prefixes,
            "model_fingerprint": model.fingerprint(), **(extra or {})}
    path.mkdir(parents=True, exist_ok=True)
    blob = save(tensors, metadata={"format": "pt"})
    atomic_write(path / WEIGHTS, lambda f: f.write(blob), what="LoRA adapter weights")
    for name, data in ((CONFIG, config), (META, meta)):  # each file whole or not at all
        text = json.dumps(data, indent=2, default=str).encode("utf-8")
        atomic_write(path / name, lambda f, t=text: f.write(t), what=name)
    return path


# -- read and merge -----------------------------------------------------------------------------------


def read_lora(path: str | Path, model) -> list[LoRAUpdate]:
    """The updates of a PEFT LoRA folder, named by ``model``'s module paths."""
    from safetensors.torch import load_file

    path = Path(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        if (path / "method.json").is_file():
            method = json.loads((path / "method.json").read_text()).get("method")
            raise UserError(f"{path} holds a vlkit {method!r} adapter, which changes how the model is used, not "
                            "its weights; --adapter takes LoRA adapters in PEFT format (adapter_config.json), "
                            "as `vlkit adapt --method lora` writes them")
        raise missing_file(config_file, "PEFT adapter config", "give a folder with adapter_config.json and "
                           "adapter_model.safetensors (a LoRA adapter saved by vlkit or peft)")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "LORA":
        raise UserError(f"{path} holds a {config.get('peft_type')} adapter; vlkit merges LoRA adapters only")
    if config.get("use_dora") or config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise UserError(f"{path} uses DoRA, trained biases or modules_to_save, which vlkit does not merge; "
                        "save a plain LoRA adapter")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise missing_file(weights, "adapter weights", "save the adapter again")
    meta_file = path / META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if meta.get("model_fingerprint") not in (None, model.fingerprint()):
        warnings.warn(f"vlkit: the adapter in {path} was trained on model {meta['model_fingerprint']}, not on this "
                      f"one ({model.fingerprint()}); its outputs will differ", stacklevel=2)
    kind = meta.get("base", "peft-written")
    prefixes = meta.get("prefixes") or _guess_prefixes(model)
    state = load_file(str(weights))
    updates = []
    for key in sorted(k for k in state if k.endswith(".lora_A.weight")):
        theirs = key[: -len(".lora_A.weight")].removeprefix(PEFT_PREFIX)
        b_key = key.replace(".lora_A.weight", ".lora_B.weight")
        name = _map(theirs, prefixes, reverse=True)
        if b_key not in state or name is None:
            raise UserError(f"{path}: LoRA weights of {theirs} do not fit this model ({kind} base); "
                            "apply the adapter to the model it was trained on")
        r = state[key].shape[0]
        alpha = _pattern(config.get("alpha_pattern"), theirs, config.get("lora_alpha", r))
        r_cfg = _pattern(config.get("rank_pattern"), theirs, config.get("r", r))
        scaling = alpha / math.sqrt(r_cfg) if config.get("use_rslora") else alpha / r_cfg
        B = state[b_key].T.contiguous() if config.get("fan_in_fan_out") else state[b_key]
        updates.append(LoRAUpdate(name, state[key], B, scaling))
    extra = sorted(k for k in state if not k.endswith((".lora_A.weight", ".lora_B.weight")))
    if extra or not updates:
        raise UserError(f"{path}: adapter_model.safetensors holds {extra[0] if extra else 'no LoRA weights'}; "
                        "vlkit merges plain LoRA adapters")
    return updates


def _guess_prefixes(model) -> dict[str, str]:
    """A PEFT folder written by peft itself: its base is the model's Hugging Face model."""
    builder = model.config.get("builder", "composed")
    if builder == "hf":
        return _prefixes(model, "hf")
    if builder == "composed" and model.config.get("text", {}).get("type") == "hf_encoder":
        return _prefixes(model, "hf_text")
    return _prefixes(model, "vlkit")


def _pattern(patterns: dict | None, name: str, default):
    import re

    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):  # PEFT's own matching (peft.utils.other.get_pattern_key)
            return value
    return default


@torch.no_grad()
def apply_lora(model, path: str | Path):
    """Merge the LoRA adapter in ``path`` into ``model``'s weights (in place); returns the model."""
    updates = read_lora(path, model)
    for u in updates:
        try:
            module = model.get_submodule(u.name)
        except AttributeError:
            raise UserError(f"{path}: the adapter updates {u.name}, which this model does not have; apply it to "
                            "the model it was trained on") from None
        weight = module.in_proj_weight if isinstance(module, nn.MultiheadAttention) else getattr(module, "weight", None)
        delta = u.B.double() @ u.A.double() * u.scaling  # (out, in)
        if weight is None or tuple(weight.shape) != tuple(delta.shape):
            raise UserError(f"{path}: the update of {u.name} ({tuple(delta.shape)}) does not fit its weight "
                            f"({None if weight is None else tuple(weight.shape)}); apply it to the model it was "
                            "trained on")
        weight.add_(delta.to(dtype=weight.dtype, device=weight.device))
    model._fingerprints.clear()
    return model
