"""DualEncoder: an image tower and a text tower projected into one space (CLIP-style).

"Learning Transferable Visual Models From Natural Language Supervision" (Radford et al., CLIP,
arXiv 2103.00020): features are L2-normalised and compared by a scaled dot product,
``logits = exp(logit_scale) * img @ txt.T (+ logit_bias, SigLIP arXiv 2303.15343)``.

Pooled/projected split: ``encode_image = project_image(encode_image_pooled(x))`` (same for text),
so a frozen tower's pooled features can be cached and only the head trained (LiT). Frozen parts
(``freeze``) stay in eval mode when the model is put in train mode, so their features are
deterministic (no dropout, fixed BatchNorm statistics) and cacheable.

Saved as ``config.json`` (plain JSON: how to rebuild the skeleton, frozen parts, fingerprint),
``model.safetensors`` (every parameter and persistent buffer) and ``assets/`` (tokenizer files);
loading never unpickles anything and reproduces the model bit-exactly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, missing_file, unknown_name
from .towers import TextTower, VisionTower

FORMAT = "vlkit.dual_encoder"
PARTS = ("visual", "text", "image_proj", "text_proj", "logit_scale")
_ALIASES = {"image": ["visual"], "vision": ["visual"], "image_head": ["image_proj"], "text_head": ["text_proj"],
            "towers": ["visual", "text"], "heads": ["image_proj", "text_proj"], "logit_bias": ["logit_scale"],
            "all": list(PARTS)}


def _as_param(value, default: float | None) -> nn.Parameter | None:
    if value is None:
        return None if default is None else nn.Parameter(torch.tensor(float(default)))
    if isinstance(value, nn.Parameter):
        return value
    if isinstance(value, torch.Tensor):
        return nn.Parameter(value.detach().clone())
    return nn.Parameter(torch.tensor(float(value)))


class DualEncoder(nn.Module):
    """``visual`` + ``text`` towers, ``image_proj`` / ``text_proj`` heads, ``logit_scale`` (log space)."""

    def __init__(self, visual: VisionTower, text: TextTower, image_proj: nn.Module | None = None,
                 text_proj: nn.Module | None = None, *, embed_dim: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float], config: Mapping,
                 logit_scale=None, logit_bias=None):
        super().__init__()
        self.visual, self.text = visual, text
        self.image_proj = image_proj if image_proj is not None else nn.Identity()
        self.text_proj = text_proj if text_proj is not None else nn.Identity()
        self.logit_scale = _as_param(logit_scale, math.log(1 / 0.07))
        self.logit_bias = _as_param(logit_bias, None)
        self.embed_dim, self.image_size = int(embed_dim), int(image_size)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.config = json.loads(json.dumps(dict(config)))  # plain JSON types, stable for fingerprints
        self._fingerprints: dict = {}

    # ---- encoding -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        """``{"input_ids": (B, L) long, "attention_mask": (B, L) long}`` with the tower's tokenizer."""
        return self.text.tokenize([texts] if isinstance(texts, str) else list(texts))

    def _tokens(self, texts) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or (isinstance(texts, Sequence) and texts and isinstance(texts[0], str)):
            texts = self.tokenize(texts)
        tokens = self.text.as_tokens(texts)
        return {k: v.to(self.device) for k, v in tokens.items()}

    def encode_image_pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Image tower output before the head: (B, visual.output_dim)."""
        return self.visual(images)

    def project_image(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.image_proj(pooled)  # (B, D)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text_pooled(self, texts) -> torch.Tensor:
        """Text tower output before the head: (B, text.output_dim)."""
        return self.text(self._tokens(texts))

    def project_text(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.text_proj(pooled)  # (B, D)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_image(self, images: torch.Tensor, normalize: bool = True, return_tokens: bool = False):
        """(B, 3, H, W) -> (B, D); with ``return_tokens`` a dict {"features", "tokens" (B, N, D)}."""
        if not return_tokens:
            return self.project_image(self.visual(images), normalize)
        out = self.visual(images, return_tokens=True)
        return {"features": self.project_image(out["pooled"], normalize),
                "tokens": self.project_image(out["tokens"], normalize)}

    def encode_text(self, texts, normalize: bool = True, return_tokens: bool = False):
        """Strings, a token dict or ids -> (B, D); with ``return_tokens`` also tokens (B, L, D) + mask."""
        tokens = self._tokens(texts)
        if not return_tokens:
            return self.project_text(self.text(tokens), normalize)
        out = self.text(tokens, return_tokens=True)
        return {"features": self.project_text(out["pooled"], normalize),
                "tokens": self.project_text(out["tokens"], normalize), "mask": out["mask"]}

    def forward(self, images: torch.Tensor, texts) -> dict[str, torch.Tensor | None]:
        """Normalised features; ``logit_scale`` is the multiplier exp(param), as open_clip returns it."""
        return {"image_features": self.encode_image(images), "text_features": self.encode_text(texts),
                "logit_scale": self.logit_scale.exp(), "logit_bias": self.logit_bias}

    def preprocess(self, train: bool = False):
        """The image transform for this model's size and normalisation (vlkit.data's)."""
        from ..data.transforms import image_transform

        return image_transform(self.image_size, self.mean, self.std, train=train)

    def replace_heads(self, head: Mapping) -> "DualEncoder":
        """New, freshly initialised image and text heads of config ``head`` (a HeadConfig mapping,
        e.g. ``{"type": "gated_mlp"}`` for SAIL). The config records them, so the model saves
        and reloads as it is. Only composed models have head sections to record them in."""
        from ..config import build
        from .heads import HeadConfig, build_head

        if self.config.get("builder", "composed") != "composed":
            raise UserError(f"replacing heads needs a composed model (vision + text towers + heads); this one "
                            f"is built by {self.config.get('builder')!r}: use a composed config or preset")
        cfg = build(HeadConfig, dict(head), prefix="heads.")
        device = self.logit_scale.device
        self.image_proj = build_head(cfg, self.visual.output_dim, self.embed_dim).to(device)
        self.text_proj = build_head(cfg, self.text.output_dim, self.embed_dim).to(device)
        self.config["image_head"] = self.config["text_head"] = asdict(cfg)
        self._fingerprints.clear()
        return self

    # ---- frozen state -------------------------------------------------------------------
    def _parts(self, names) -> list[str]:
        names = [names] if isinstance(names, str) else list(names)
        out = []
        for name in names:
            if name in PARTS:
                out.append(name)
            elif name in _ALIASES:
                out.extend(_ALIASES[name])
            else:
                raise unknown_name("model part", name, [*PARTS, *_ALIASES])
        return list(dict.fromkeys(out))

    def _part_params(self, part: str) -> list[nn.Parameter]:
        if part == "logit_scale":
            return [p for p in (self.logit_scale, self.logit_bias) if p is not None]
        return list(getattr(self, part).parameters())

    def freeze(self, parts="towers") -> "DualEncoder":
        """Stop gradients to ``parts`` (visual, text, image_proj, text_proj, logit_scale, towers,
        heads, all) and keep them in eval mode."""
        for part in self._parts(parts):
            for p in self._part_params(part):
                p.requires_grad_(False)
            if part != "logit_scale":
                getattr(self, part).eval()
        return self

    def unfreeze(self, parts="all") -> "DualEncoder":
        for part in self._parts(parts):
            for p in self._part_params(part):
                p.requires_grad_(True)
            if part != "logit_scale":
                getattr(self, part).train(self.training)
        return self

    def is_frozen(self, part: str) -> bool:
        params = [p for name in self._parts(part) for p in self._part_params(name)]
        return bool(params) and not any(p.requires_grad for p in params)

    def frozen_parts(self) -> list[str]:
        return [part for part in PARTS if self.is_frozen(part)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "DualEncoder":
        super().train(mode)
        for part in self.frozen_parts():
            if part != "logit_scale":
                getattr(self, part).eval()
        return self

    def no_weight_decay(self) -> set[str]:
        """Names of parameters usually kept out of weight decay (1-D, embeddings of positions/CLS)."""
        keys = ("logit_scale", "logit_bias", "positional_embedding", "pos_embed", "class_embedding", "cls_token")
        return {n for n, p in self.named_parameters() if p.ndim < 2 or any(k in n for k in keys)}

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for part in PARTS:
            params = self._part_params(part)
            out[part] = {"total": sum(p.numel() for p in params),
                         "trainable": sum(p.numel() for p in params if p.requires_grad)}
        return out

    # ---- fingerprint -------------------------------------------------------------------------
    def _part_tensors(self, part: str | None) -> list[tuple[str, torch.Tensor]]:
        state = self.state_dict(keep_vars=True)
        if part is None:
            return sorted(state.items())
        if part == "logit_scale":
            prefixes = ("logit_scale", "logit_bias")
        else:
            prefixes = (part + ".",)
        return sorted((k, v) for k, v in state.items() if k.startswith(prefixes))

    def _part_config(self, part: str | None) -> dict:
        cfg = {k: v for k, v in self.config.items() if k not in ("source", "pretrained")}  # where, not what
        section = {"visual": "vision", "text": "text", "image_proj": "image_head", "text_proj": "text_head"}.get(part or "")
        if cfg.get("builder", "composed") == "composed" and section in cfg:
            return {"part": part, "config": cfg[section]}
        return {"part": part, "config": cfg}

    def fingerprint(self, part: str | None = None, refresh: bool = False) -> str:
        """Stable hash of the config and weights (of one part: visual, text, image_proj, text_proj).

        Cached; recomputed when a parameter or buffer is replaced or changed in place by a
        tracked op (optimizer steps, ``load_state_dict``, ``copy_`` under no_grad: each bumps the
        tensor's version counter). Writes through ``.data`` are not tracked: pass ``refresh=True``.
        """
        if part is not None and part not in PARTS:
            raise unknown_name("model part", part, PARTS)
        tensors = self._part_tensors(part)
        key = tuple((k, id(t), t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for k, t in tensors)
        hit = self._fingerprints.get(part)
        if hit is not None and hit[0] == key and not refresh:
            return hit[1]
        h = hashlib.sha256(json.dumps(self._part_config(part), sort_keys=True).encode())
        for name, t in tensors:
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        digest = h.hexdigest()[:20]
        self._fingerprints[part] = (key, digest)
        return digest

    # ---- save / load ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write config.json + model.safetensors + assets/ to the directory ``path``."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # config.json goes first and comes back last (atomically): a directory holding one holds a
        # whole model, and one cut short says so on load (read_meta)
        (path / "config.json").unlink(missing_ok=True)
        for name, tower in (("visual", self.visual), ("text", self.text)):
            (path / "assets" / name).mkdir(parents=True, exist_ok=True)
            tower.save_assets(path / "assets" / name)
        fp = self.fingerprint()
        save_model(self, str(path / "model.safetensors"), metadata={"format": FORMAT, "fingerprint": fp},
                   force_contiguous=True)
        from .. import __version__

        meta = {"format": FORMAT, "format_version": 1, "vlkit_version": __version__, "config": self.config,
                "frozen": self.frozen_parts(), "fingerprint": fp}
        from ..engine.checkpoint import atomic_write

        text = json.dumps(meta, indent=2).encode("utf-8")
        atomic_write(path / "config.json", lambda f: f.write(text), what="model config")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DualEncoder":
        """Rebuild from ``config.json`` (skeleton, no downloads) and load ``model.safetensors``."""
        from safetensors.torch import load_model

        from .builders import build_model

        path = Path(path)
        meta = read_meta(path)
        model = build_model(meta["config"], weights=False, assets=path / "assets")
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise missing_file(weights, "model weights", "the directory was not fully written; save the model again")
        try:
            load_model(model, str(weights), strict=True)
        except Exception as e:  # safetensors' own errors, shape/key mismatches
            from .. import __version__

            saved = meta.get("vlkit_version")  # absent: saved before vlkit recorded it
            fix = ("save the model again" if saved == __version__ else
                   f"it was saved by {'vlkit ' + saved if saved else 'an older vlkit'} and this is vlkit "
                   f"{__version__}: load it with that version, or retrain it with this one")
            raise UserError(f"{weights} is damaged or does not match its config.json "
                            f"({str(e).splitlines()[0][:200]}); {fix}") from None
        model.config = copy.deepcopy(meta["config"])
        model.unfreeze("all")
        if meta.get("frozen"):
            model.freeze(meta["frozen"])
        model._fingerprints.clear()
        saved_fp = meta.get("fingerprint")  # absent: saved before vlkit recorded one
        if saved_fp and model.fingerprint() != saved_fp:
            raise UserError(f"{weights} does not match the fingerprint saved with it (config.json says "
                            f"{saved_fp}, the weights give {model.fingerprint()}): the files were changed "
                            "or mixed after saving; save the model again or restore its files")
        return model


def read_meta(path: Path) -> dict:
    """The parsed config.json of a saved DualEncoder directory (UserError if it is not one)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        if (Path(path) / "model.safetensors").exists() or (Path(path).parent / "checkpoints").is_dir():
            # config.json is written last: its absence means the save was cut short
            raise UserError(f"{path} has no config.json: the model's save was cut short (killed during the "
                            f"final save?); finish it with `vlkit pretrain CONFIG --resume` (out_dir "
                            f"{Path(path).parent}), which saves the model again from the last checkpoint")
        raise missing_file(file, "DualEncoder config", "give a directory written by DualEncoder.save")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{file} is not valid JSON; save the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a vlkit model directory; for a Hugging Face model directory use hf:{path}")
    return meta
