"""The two sources of an :class:`~vlkit.evaluate.context.EvalContext`: a model with data, or
precomputed arrays.

:class:`ModelContext` follows the contracts in docs/architecture.md and nothing more (duck
typing): a model with ``encode_image(images, normalize=True)``, ``encode_text(texts,
normalize=True)``, ``preprocess(train=False)``, ``fingerprint()`` and a log-space
``logit_scale``; datasets with ``classnames``, ``templates``, ``targets``, ``fingerprint()``,
``name``, ``view`` and samples with ``image``, ``captions`` and ``meta``.

Both sources refuse NaN or infinite values where they hand them out (image and text features,
given logits, the logit scale) with one line naming the suite that asked and the model
(:func:`~vlkit.evaluate.base.require_finite`), so no suite ever scores them.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import UserError
from .context import EvalContext, as_split_dict


class ModelContext(EvalContext):
    """A dual encoder and a dataset (spec string, ``{split: dataset}`` or one dataset)."""

    source = "model"

    def __init__(
        self,
        model,
        data,
        seed: int = 0,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        cache: bool | Any = True,
        text_batch_size: int = 256,
        data_options: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        progress: bool = False,
    ):
        super().__init__(seed=seed, logit_scale=_logit_scale_of(model), text_batch_size=text_batch_size)
        self.progress = progress  # show the image encoding (the slow part of an evaluation)
        self.model = model
        self._model_name = repr(model_name) if model_name else None
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else _device_of(model)
        self._spec: str | None = None
        self._given: dict[str, Any] = {}
        self._data_options = dict(data_options or {})
        if self._data_options and not isinstance(data, str):
            raise UserError("data_options apply to a dataset spec; pass the options to vlkit.data.load instead")
        if isinstance(data, str):
            self._spec = data
        elif isinstance(data, Mapping):
            self._given = dict(data)
        else:
            self._given = {getattr(data, "split", "test"): data}
        first = next(iter(self._given.values()), None)
        self.data_name = self._spec.split(":")[0].split("=")[0] if self._spec else getattr(first, "name", "data")
        self.view = getattr(first, "view", None) if first is not None else _view_of_spec(self._spec)
        self._cache = _feature_cache() if cache is True else (cache or None)

    def restyled(self, **data_options: Any) -> "ModelContext":
        if self._spec is None:
            return super().restyled(**data_options)
        new = ModelContext(self.model, self._spec, seed=self.seed, batch_size=self.batch_size, device=self.device,
                           cache=self._cache if self._cache is not None else False,
                           text_batch_size=self.text_batch_size, data_options={**self._data_options, **data_options})
        new._model_name, new.suite = self._model_name, self.suite
        new._text_rows = self._text_rows  # the same model: text features are shared
        return new

    # -- splits and datasets --------------------------------------------------------------------
    def _split_names(self) -> list[str]:
        if self._spec is None:
            return sorted(self._given)
        entry = _dataset_entry(self.data_name)
        return list(getattr(entry, "splits", ()) or ())

    def _has_split(self, split: str) -> bool:
        if self._spec is None:
            return split in self._given
        entry = _dataset_entry(self.data_name)
        if entry is not None and getattr(entry, "splits", None):
            return split in entry.splits
        # not in the registry: loading tells (and an unknown name raises its own error)
        self._given[split] = _load(self._spec, split, self._data_options)
        return True

    def _dataset(self, split: str):
        if split not in self._given:
            self._given[split] = _load(self._spec, split, self._data_options)
        ds = self._given[split]
        if self.view is None:
            self.view = getattr(ds, "view", None)
        return ds

    def _classnames(self, split: str):
        return self.dataset(split).classnames

    def _templates(self, split: str):
        return self.dataset(split).templates

    # -- columns ----------------------------------------------------------------------------------
    def _labels(self, split: str):
        return np.asarray(self.dataset(split).targets)

    def _captions(self, split: str) -> list[list[str]]:
        ds = self.dataset(split)
        at = getattr(ds, "captions_at", None)  # avoids decoding images where the dataset allows
        return [at(i) if at else ds[i].captions for i in range(len(ds))]

    def _meta(self, split: str) -> list[dict]:
        ds = self.dataset(split)
        at = getattr(ds, "meta_at", None)
        return [at(i) if at else ds[i].meta for i in range(len(ds))]

    def _fewshot(self, split: str, shots: int, within: torch.Tensor) -> torch.Tensor:
        """The data layer's K-shot sampler where it exists, so every part of vlkit draws the
        same K shots for a (dataset, seed, K)."""
        ds = self.dataset(split)
        try:
            from ..data import VLDataset
            from ..data.splits import fewshot_indices
        except ImportError:
            return super()._fewshot(split, shots, within)
        if not isinstance(ds, VLDataset):  # a duck-typed dataset: sample from its labels
            return super()._fewshot(split, shots, within)
        if len(within) != len(ds):
            ds = ds.subset(within.numpy())
        return torch.as_tensor(fewshot_indices(ds, shots, self.seed, allow_fewer=True), dtype=torch.long)

    # -- encoders -------------------------------------------------------------------------------
    def _image_features(self, split: str) -> torch.Tensor:
        if not callable(getattr(self.model, "encode_image", None)) or getattr(self.model, "visual", 0) is None:
            raise self._missing_tower("image")
        ds = self.dataset(split)
        if self._cache is None:
            feats = self._encode_images(ds)
        else:
            transform = self.model.preprocess(train=False)
            key = {"model": self.model.fingerprint(), "data": ds.fingerprint(), "transform": repr(transform), "view": 0}
            feats = self._cache.get(key, lambda: self._encode_images(ds, transform), rows=len(ds))
        return self._finite(feats, f"image features on split {split!r}")

    def _encode_images(self, ds, transform=None) -> torch.Tensor:
        transform = transform or self.model.preprocess(train=False)
        from ..engine.progress import Progress

        feats = []
        desc = f"encoding {getattr(ds, 'split', '')} images".replace("  ", " ")
        with torch.no_grad(), _eval_mode(self.model), Progress(len(ds), desc, unit="image",
                                                                enabled=self.progress, leave=False) as shown:
            for start in range(0, len(ds), self.batch_size):
                stop = min(start + self.batch_size, len(ds))
                images = torch.stack([transform(ds[i].image) for i in range(start, stop)])  # (B, 3, H, W)
                feats.append(self.model.encode_image(images.to(self.device), normalize=True).float().cpu())
                shown.update(stop - start)
        return torch.cat(feats)  # (N, D)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        if not callable(getattr(self.model, "encode_text", None)) or getattr(self.model, "text", 0) is None:
            raise self._missing_tower("text")
        fingerprint = _call(self.model, "fingerprint")
        if self._cache is None or fingerprint is None:
            return self._finite(self._run_text(texts), "text features")
        # a chunk of texts (the base class encodes in chunks of text_batch_size), keyed by
        # content, so a second evaluation of the same model skips the text tower as well
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        key = {"model": fingerprint, "texts": digest, "n_texts": len(texts), "kind": "eval-text"}
        feats = self._cache.get(key, lambda: self._run_text(texts).float().cpu(), rows=len(texts))
        return self._finite(feats, "text features")

    def _model_label(self) -> str:
        return self._model_name or _model_label(self.model)

    def _run_text(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad(), _eval_mode(self.model):
            return self.model.encode_text(list(texts), normalize=True)

    def describe(self) -> dict:
        splits = {}
        for key, ds in list(self._memo.items()):
            if isinstance(key, tuple) and key[0] == "dataset":
                splits[key[1]] = {"n": len(ds), "fingerprint": _call(ds, "fingerprint")}
        return {**super().describe(), "spec": self._spec, "splits": splits}

    def describe_model(self) -> dict:
        cfg = getattr(self.model, "config", None)
        return {
            "class": type(self.model).__name__,
            "fingerprint": _call(self.model, "fingerprint"),
            "logit_scale": self._scale(),  # unchecked: describing is not scoring
            "config": cfg if isinstance(cfg, (dict, str, type(None))) else repr(cfg),
        }


class ArrayContext(EvalContext):
    """Precomputed inputs, each ``{split: value}`` (a bare value means ``"test"``); class names
    and templates are one list for every split, or ``{split: list}``."""

    source = "arrays"

    def __init__(
        self,
        image_features=None,
        labels=None,
        logits=None,
        captions=None,
        meta=None,
        classnames=None,
        templates=None,
        encode_text=None,
        seed: int = 0,
        logit_scale: float | None = None,
        name: str = "arrays",
    ):
        super().__init__(seed=seed, logit_scale=logit_scale)
        self.data_name = name
        self._cols = {
            "image_features": as_split_dict(image_features, "image_features"),
            "labels": as_split_dict(labels, "labels"),
            "logits": as_split_dict(logits, "logits"),
            "captions": as_split_dict(captions, "captions"),
            "meta": as_split_dict(meta, "meta"),
        }
        self._names, self._tmpl, self._text_fn = classnames, templates, encode_text

    def _split_names(self) -> list[str]:
        return sorted({s for col in self._cols.values() for s in col})

    def _column(self, col: str, split: str):
        if split not in self._cols[col]:
            raise UserError(f"{self._who()}no {col} given for split {split!r}; pass {col}={{{split!r}: ...}}")
        return self._cols[col][split]

    def _image_features(self, split):
        return self._finite(self._column("image_features", split), f"image features on split {split!r}")

    def _labels(self, split):
        return self._column("labels", split)

    def _captions(self, split):
        return self._column("captions", split)

    def _meta(self, split):
        return self._column("meta", split)

    def _given_logits(self, split):
        value = self._cols["logits"].get(split)
        return None if value is None else self._finite(value, f"logits on split {split!r}").float()

    def _classnames(self, split):
        return self._names.get(split) if isinstance(self._names, Mapping) else self._names

    def _templates(self, split):
        return self._tmpl.get(split) if isinstance(self._tmpl, Mapping) else self._tmpl

    def _encode_text(self, texts):
        if self._text_fn is None:
            raise self._missing_tower("text")
        return self._finite(self._text_fn(texts), "text features")

    def _model_label(self) -> str:
        return f"(arrays {self.data_name!r})"

    def describe_model(self) -> dict:
        return {"class": "arrays", "fingerprint": None, "logit_scale": self._scale()}


# -- helpers ------------------------------------------------------------------------------------


def _load(spec: str, split: str, options: Mapping[str, Any]):
    from .. import data

    return data.load(spec, split=split, **options)


def _dataset_entry(name: str):
    try:
        from ..data import DATASETS

        return DATASETS.get(name)
    except (ImportError, UserError):
        return None


def _view_of_spec(spec: str | None) -> str | None:
    if not spec:
        return None
    head = spec.split("=", 1)[0]
    return head.split(":", 1)[1] if ":" in head else None


def _feature_cache():
    try:
        from ..data.cache import FeatureCache
        from ..paths import cache_dir
    except ImportError:  # the data layer has no cache yet: features live in memory only
        return None
    return FeatureCache(cache_dir("features"))


def _model_label(model) -> str:
    """How errors name a model object: its class and the start of its fingerprint (only built
    for an error: a fingerprint may hash every weight)."""
    fingerprint = _call(model, "fingerprint")
    return f"{type(model).__name__}" + (f" ({str(fingerprint)[:16]})" if fingerprint else "")


def _logit_scale_of(model) -> float | None:
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        return None
    return float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0])


def _device_of(model) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _call(obj, method: str):
    fn = getattr(obj, method, None)
    return fn() if callable(fn) else None


@contextlib.contextmanager
def _eval_mode(model):
    """Dropout off while encoding; the caller's train/eval state comes back afterwards."""
    was_training = getattr(model, "training", None)
    if was_training and callable(getattr(model, "eval", None)):
        model.eval()
    try:
        yield
    finally:
        if was_training and callable(getattr(model, "train", None)):
            model.train(True)
