"""``vlkit export MODEL --to open_clip|hf OUT``: a vlkit model as its peer library's checkpoint.

What each target writes, and which models it takes (the towers decide, not a flag):

- ``open_clip`` (models built by open_clip: ``openclip:ARCH[@...]``, the ``tiny-clip`` preset,
  a saved dir of such a model): open_clip's local model folder, ``open_clip_config.json``
  (``model_cfg`` + ``preprocess_cfg``) and ``open_clip_model.safetensors`` (open_clip's own
  parameter names), plus ``ARCH.json`` (the bare model config). Load it with
  ``open_clip.create_model_and_transforms("local-dir:OUT")``, or
  ``open_clip.add_model_config("OUT/ARCH.json")`` then
  ``open_clip.create_model("ARCH", pretrained="OUT/open_clip_model.safetensors")``.
- ``hf`` (Hugging Face CLIP / SigLIP models, ``hf:DIR``): ``save_pretrained`` output of
  ``CLIPModel`` / ``SiglipModel`` with the tokenizer and the image processor config; load it with
  ``CLIPModel.from_pretrained(OUT)`` (or ``AutoModel``).
- ``hf`` for a composed model whose text tower is a Hugging Face encoder (``hf_encoder``, e.g.
  the MiniLM of the moji-lit presets): ``OUT/text/`` is the encoder (``AutoModel.from_pretrained``,
  with its tokenizer) and ``OUT/text_head.safetensors`` the text head; the text embedding is
  ``normalize(text_head(pool(last_hidden_state)))`` with the pooling named in
  ``vlkit_export.json``. The image tower (convvit, cnn, timm) has no Hugging Face class: it
  stays a vlkit model (``vlkit.models.load(MODEL)``), as ``vlkit_export.json`` says.

``adapter=DIR`` (``--adapter DIR``) exports the model with a LoRA adapter in PEFT format merged
into its weights (:mod:`vlkit.models.peft_adapter`). Anything else is refused in one line
naming what can be exported. Every export is written to a
staging folder next to OUT and renamed into place, so OUT never holds half an export.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import UserError

TARGETS = ("open_clip", "hf")
MARKER = "vlkit_export.json"  # every export has one; --overwrite replaces only folders that do


def export(model, to: str, out: str | Path, overwrite: bool = False, adapter: str | Path | None = None) -> Path:
    """Write ``model`` (a DualEncoder or a spec for :func:`vlkit.models.load`) as ``to`` in ``out``;
    with ``adapter`` (a LoRA folder in PEFT format), the model with the adapter merged in."""
    from .loading import load

    if to not in TARGETS:
        raise UserError(f"unknown export target {to!r}; use one of: {', '.join(TARGETS)}")
    out = Path(out)
    _check_out(out, overwrite)
    spec = model if isinstance(model, (str, Path)) else None
    model = load(model)
    if adapter is not None:
        from .peft_adapter import apply_lora

        if spec is None:  # merging changes the weights: never the caller's model
            import copy

            model = copy.deepcopy(model)
        model = apply_lora(model, adapter)
    writer = {"open_clip": _write_openclip, "hf": _write_hf}[to]
    stage = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        info = writer(model, stage)
        info.update(format="vlkit.export", target=to, source=str(spec) if spec else model.config.get("source"),
                    adapter=str(adapter) if adapter is not None else None, fingerprint=model.fingerprint())
        (stage / MARKER).write_text(json.dumps(info, indent=2, default=str) + "\n")
        _move_into_place(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError(f"{out} is not empty and holds no earlier vlkit export; give a new or empty folder")
        if not overwrite:
            raise UserError(f"{out} holds an earlier export; pass --overwrite (overwrite=True) to replace it")


def _move_into_place(stage: Path, out: Path) -> None:
    aside = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.is_dir() and any(out.iterdir()):
        os.replace(out, aside)  # checked by _check_out: an earlier export
    elif out.is_dir():
        out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage, out)
    shutil.rmtree(aside, ignore_errors=True)


def _builder(model) -> str:
    return model.config.get("builder", "composed")


def _refuse(model, to: str) -> UserError:
    b = _builder(model)
    what = b if b != "composed" else (f"composed: {model.config['vision'].get('type')} vision + "
                                      f"{model.config['text'].get('type')} text")
    return UserError(f"this model ({what}) cannot be exported --to {to}: --to open_clip takes models built by "
                     "open_clip (openclip:ARCH, preset:tiny-clip), --to hf takes hf: CLIP/SigLIP models and the "
                     "Hugging Face text tower (hf_encoder) of composed models such as preset:moji-lit-s")


# -- open_clip ---------------------------------------------------------------------------------


def openclip_state_dict(model) -> dict[str, torch.Tensor]:
    """The DualEncoder's weights under open_clip's names (``CLIP`` / ``CustomTextCLIP``)."""
    custom = bool(model.config["model_cfg"].get("custom_text"))
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("visual.model."):
            name = "visual." + key[len("visual.model."):]
        elif key.startswith("text."):
            name = ("text." if custom else "") + key[len("text."):]
        elif key in ("logit_scale", "logit_bias"):
            name = key
        else:  # an open_clip model's heads live inside its towers; a replaced head has no open_clip place
            raise UserError(f"weight {key} has no place in an open_clip model (were its heads replaced?); "
                            "export the model before replacing heads")
        out[name] = value.detach().cpu().contiguous()
    return out


def _write_openclip(model, out: Path) -> dict:
    from open_clip import CLIP, CustomTextCLIP
    from safetensors.torch import save_file

    if _builder(model) != "openclip":
        raise _refuse(model, "open_clip")
    model_cfg = dict(model.config["model_cfg"])
    state = openclip_state_dict(model)
    with torch.device("meta"):  # check every name and shape against open_clip's own class, for free
        ref = (CustomTextCLIP if model_cfg.get("custom_text") else CLIP)(
            **{k: v for k, v in model_cfg.items() if k != "custom_text"})
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:3]
        raise UserError(f"this model's weights do not match open_clip's {model.config.get('arch')} ({diff}); "
                        "it cannot be exported --to open_clip")
    arch = str(model.config.get("arch") or "vlkit-export").replace("/", "-")
    size = model.image_size
    preprocess = {"mean": model.mean, "std": model.std, "size": [size, size], "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    save_file(state, str(out / "open_clip_model.safetensors"), metadata={"format": "pt"})
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess},
                                                          indent=2) + "\n")
    (out / f"{arch}.json").write_text(json.dumps(model_cfg, indent=2) + "\n")
    return {"open_clip": {"local_dir": "open_clip_config.json + open_clip_model.safetensors",
                          "model_config": f"{arch}.json", "arch": arch}}


# -- Hugging Face --------------------------------------------------------------------------------


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """An ``hf`` DualEncoder's weights under ``CLIPModel`` / ``SiglipModel`` names."""
    family = model.config["family"]
    heads = {"image_proj.": "visual_projection.", "text_proj.": "text_projection."} if family == "clip" \
        else {"text_proj.": "text_model.head."}
    prefixes = {"visual.model.": "vision_model.", "text.model.": "text_model.", **heads}
    out = {}
    for key, value in model.state_dict().items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        name = key if prefix is None else prefixes[prefix] + key[len(prefix):]
        out[name] = value.detach().cpu().contiguous()
    return out


def _write_hf(model, out: Path) -> dict:
    builder = _builder(model)
    if builder == "hf":
        return _write_hf_dual(model, out)
    if builder == "composed" and model.config["text"].get("type") == "hf_encoder":
        return _write_hf_text(model, out)
    raise _refuse(model, "hf")


def _write_hf_dual(model, out: Path) -> dict:
    from .hf_common import from_config, quiet
    from .hf_towers import _classes

    family = model.config["family"]
    config_cls, model_cls = _classes(family)
    hf = from_config(model_cls, config_cls.from_dict(model.config["hf_config"]))
    try:
        hf.load_state_dict(hf_state_dict(model), strict=True)
    except RuntimeError as e:
        raise UserError(f"this model's weights do not fit transformers' {model_cls.__name__} "
                        f"({str(e).splitlines()[0][:200]}); it cannot be exported --to hf") from None
    with quiet():  # no progress bar per shard
        hf.save_pretrained(str(out))
    model.text.save_assets(out)
    _image_processor(family, model).save_pretrained(str(out))
    return {"hf": {"class": model_cls.__name__, "load": f"transformers.{model_cls.__name__}.from_pretrained(OUT)"}}


def _image_processor(family: str, model):
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    size = model.image_size
    if family == "clip":
        return CLIPImageProcessor(image_mean=model.mean, image_std=model.std, size={"shortest_edge": size},
                                  crop_size={"height": size, "width": size})
    return SiglipImageProcessor(image_mean=model.mean, image_std=model.std, size={"height": size, "width": size})


def _write_hf_text(model, out: Path) -> dict:
    from safetensors.torch import save_file

    from .hf_common import quiet

    text = model.text
    with quiet():
        text.model.save_pretrained(str(out / "text"))
    text.save_assets(out / "text")
    head = {k: v.detach().cpu().contiguous() for k, v in model.text_proj.state_dict().items()}
    head_cfg = model.config.get("text_head", {})
    if head:
        save_file(head, str(out / "text_head.safetensors"), metadata={"format": "pt"})
    return {"hf": {
        "text": {"load": "transformers.AutoModel.from_pretrained(OUT/text)",
                 "pooling": text.pooling, "context_length": text.context_length,
                 "head": head_cfg.get("type", "linear"), "head_weights": "text_head.safetensors" if head else None,
                 "embedding": "normalize(text_head(pool(last_hidden_state, attention_mask)))"},
        "image": {"exported": False, "tower": model.config["vision"].get("type"),
                  "reason": "the image tower has no Hugging Face class; load the vlkit model for images "
                            "(vlkit.models.load)"},
    }}
