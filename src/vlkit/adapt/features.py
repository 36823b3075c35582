"""Shared feature caching for adaptation: frozen image features per view, frozen text weights.

The reference code of the CoOp family re-encodes every training image every step, with
decoding and augmentation, for up to 200 epochs, although the image tower is frozen. Here:

- **Training views.** ``V`` augmented views of each training image (Tip-Adapter uses 10) are
  encoded once. View ``v`` of the image at position ``i`` of a split is drawn by the data
  layer's seeded collate (``Collate.set_epoch(v)``), so it is a pure function of (aug seed, v,
  i). Each epoch the training batches pick one view per image (seeded): augmentation at the
  cost of a table lookup.
- **Validation/test features** (the eval transform, "view" ``eval``) are computed once and
  reused by every method, seed and epoch-selection pass.
- **Per-position banks.** A :class:`ViewBank` is keyed by (image-path fingerprint, data
  fingerprint of the *whole* split, transform, view, aug seed) and holds features per position,
  growing as positions are asked for; so the 16-shot set of seed 2 reuses every image it shares
  with seed 1, and a later run (another process) reads them from disk. Files are safetensors
  written to a temp file and moved into place (never a half file), next to the data layer's
  :class:`~vlkit.data.cache.FeatureCache` entries, with the same checksums, verified on read.
- **Text weights** of frozen hand-crafted prompts (zero-shot weights, KgCoOp's targets) are
  computed once per (text-path fingerprint, class names, templates) through ``FeatureCache``.

Only methods that leave the image path frozen use the image banks; MaPLe and LoRA on the image
tower run the tower each step (:meth:`Method.uses_image_tower`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.view_bank import ViewBank, view_encoder  # noqa: F401  (ViewBank: re-exported)
from ..paths import cache_dir

_TEXT_CACHES: dict[str, object] = {}


def image_path_fingerprint(model) -> str:
    """What frozen image features depend on: the image tower and its head."""
    return f"{model.fingerprint('visual')}+{model.fingerprint('image_proj')}"


def text_path_fingerprint(model) -> str:
    return f"{model.fingerprint('text')}+{model.fingerprint('text_proj')}"


def _feature_cache():
    from ..data.cache import FeatureCache

    root = str(cache_dir("features"))
    if root not in _TEXT_CACHES:
        _TEXT_CACHES[root] = FeatureCache(root)
    return _TEXT_CACHES[root]


def fill(template: str, classname: str) -> str:
    return template.replace("{}", classname) if "{}" in template else f"{template} {classname}"


def text_classifier(model, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """(n_cls, D) zero-shot weights: per class the renormalised mean of its normalised prompts (CLIP)."""
    names, tpls = list(classnames), list(templates)
    digest = hashlib.sha256(json.dumps([names, tpls]).encode()).hexdigest()[:24]
    key = {"kind": "adapt.text_classifier", "model": text_path_fingerprint(model), "prompts": digest}

    def compute() -> torch.Tensor:
        prompts = [fill(t, c) for c in names for t in tpls]  # class-major
        with torch.no_grad():
            emb = torch.cat([model.encode_text(prompts[i:i + batch_size]).float().cpu()
                             for i in range(0, len(prompts), batch_size)])  # (C * T, D)
        emb = F.normalize(emb, dim=-1).view(len(names), len(tpls), -1).mean(dim=1)  # (C, D)
        return F.normalize(emb, dim=-1)

    return _feature_cache().get(key, compute, rows=len(names)).clone()


class FeatureStore:
    """Frozen image features of a model for the runs of one process (banks in memory + disk).

    ``encoded`` counts images pushed through the image tower; tests and benchmarks read it.
    """

    def __init__(self, model, device: torch.device | str = "cpu", batch_size: int = 256,
                 aug_scale: Sequence[float] = (0.9, 1.0), aug_seed: int = 0):
        self.model, self.device, self.batch_size = model, torch.device(device), int(batch_size)
        self.aug_scale, self.aug_seed = (float(aug_scale[0]), float(aug_scale[1])), int(aug_seed)
        self.root = cache_dir("features", "adapt")
        self.banks: dict[str, ViewBank] = {}
        self.encoded = 0
        self.progress = False  # show encodings of more than one batch (adapt.run sets its progress)

    def train_transform(self, scale: Sequence[float] | None = None, hflip: bool = False):
        """The training images' transform: random-resized crops at ``scale`` (default: the
        store's ``aug_scale``), a horizontal flip when ``hflip``."""
        from ..data.transforms import image_transform

        m = self.model
        scale = self.aug_scale if scale is None else (float(scale[0]), float(scale[1]))
        return image_transform(m.image_size, m.mean, m.std, train=True, scale=scale, hflip=bool(hflip))

    def eval_transform(self):
        return self.model.preprocess(train=False)

    def _bank(self, dataset, transform, view) -> ViewBank:
        key = {"kind": "adapt.image", "model": image_path_fingerprint(self.model), "data": dataset.fingerprint(),
               "transform": repr(transform), "view": view, "aug_seed": self.aug_seed if view != "eval" else None}
        name = json.dumps(key, sort_keys=True)
        if name not in self.banks:
            self.banks[name] = ViewBank(key, self.root)
        return self.banks[name]

    def _encoder(self, dataset, transform, view) -> Callable[[np.ndarray], torch.Tensor]:
        self.model.to(self.device)
        compute = view_encoder(dataset, transform, view, self.aug_seed,
                               lambda images: self.model.encode_image(images, normalize=False),
                               self.batch_size, self.device)

        def encode(positions: np.ndarray) -> torch.Tensor:
            from ..engine.progress import Progress

            out = []
            what = f"encoding {getattr(dataset, 'split', '')} images" + ("" if view == "eval" else f" (view {view})")
            with Progress(len(positions), what, unit="image", leave=False,  # shown where it takes a while
                          enabled=self.progress and len(positions) > self.batch_size) as shown:
                for start in range(0, len(positions), self.batch_size):
                    chunk = positions[start:start + self.batch_size]
                    out.append(compute(chunk))  # (b, D)
                    self.encoded += len(chunk)
                    shown.update(len(chunk))
            return torch.cat(out)

        return encode

    def eval_features(self, dataset, positions: np.ndarray | None = None) -> torch.Tensor:
        """(N, D) projected, unnormalised features of ``dataset`` (a whole split) at ``positions`` (default: all)."""
        positions = np.arange(len(dataset)) if positions is None else np.asarray(positions)
        tf = self.eval_transform()
        feats, _ = self._bank(dataset, tf, "eval").get(positions, self._encoder(dataset, tf, "eval"))
        return feats

    def view_features(self, dataset, positions: np.ndarray, n_views: int, transform=None) -> torch.Tensor:
        """(V, N, D) projected, unnormalised features of ``n_views`` augmented views of the images
        at ``positions``, drawn with ``transform`` (default: :meth:`train_transform`)."""
        tf = self.train_transform() if transform is None else transform
        views = []
        for v in range(int(n_views)):
            feats, _ = self._bank(dataset, tf, v).get(np.asarray(positions), self._encoder(dataset, tf, v))
            views.append(feats)
        return torch.stack(views)  # (V, N, D)
