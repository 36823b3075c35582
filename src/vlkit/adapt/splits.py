"""Task splits for the protocols: which samples of a whole data split, with which labels.

A :class:`Split` keeps the *whole* data split plus positions into it, so image features are
cached per position of the whole split and shared by every seed, shot count and class subset
(few-shot sets of different seeds overlap; base and new classes come from the same test split).
Sampling is the data layer's (:func:`vlkit.data.fewshot_indices`, :func:`base_new_split`):
deterministic from (data fingerprint, seed, K), independent of call order.

Dataset specs may carry load options after ``@``: ``openmoji:subgroup@glyph_scale=0.5`` or
``shapes:color@textures=true,max_objects=1`` (values are YAML scalars). Domain-shift targets are
written this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..grammar import split_data_spec


@dataclass
class Split:
    dataset: object  # a whole VLDataset split: features are cached per position in it
    positions: np.ndarray  # (N,) positions in ``dataset``
    labels: np.ndarray  # (N,) labels in the task's class order
    classnames: list[str]
    templates: list[str]

    def __len__(self) -> int:
        return len(self.positions)


def parse_data(spec: str) -> tuple[str, dict]:
    """``"NAME[:VIEW][=PATH][@k=v,...]"`` -> (data spec, load options); :mod:`vlkit.grammar`'s form."""
    return split_data_spec(spec)


def load_split(spec: str, split: str, required: bool = True):
    """A whole data split, or None when the dataset has no such split and it is not required."""
    from .. import data

    name, options = parse_data(spec)
    try:
        ds = data.load(name, split=split, **options)
    except UserError:
        if required:
            raise
        return None
    if ds.view is None or not ds.classnames:
        raise UserError(f"dataset {name!r} has no labelled view selected; adaptation needs classes, "
                        f"e.g. --data {name.split(':')[0]}:VIEW (see `vlkit data list`)")
    return ds


def _templates(ds) -> list[str]:
    return list(ds.templates or ["a photo of a {}."])


def whole(ds) -> Split:
    """Every sample of a split, with its own labels (test sets)."""
    keep = np.flatnonzero(ds.targets >= 0)
    return Split(ds, keep, ds.targets[keep], list(ds.classnames), _templates(ds))


def fewshot(ds, shots: int, seed: int, allow_fewer: bool = False, purpose: str | None = None) -> Split:
    """K shots per class of a split (the data layer's sampler; its error names a short class)."""
    from ..data import fewshot_indices

    idx = np.asarray(fewshot_indices(ds, shots, seed, purpose=purpose, allow_fewer=allow_fewer), dtype=np.int64)
    return Split(ds, idx, ds.targets[idx], list(ds.classnames), _templates(ds))


def validation(ds, shots: int, seed: int) -> Split | None:
    """CoOp's validation set: min(K, 4) shots per class (classes with fewer give what they have)."""
    if ds is None:
        return None
    split = fewshot(ds, min(shots, 4), seed, allow_fewer=True, purpose="val")
    return split if len(split) else None


def restrict(split: Split, class_ids: Sequence[int]) -> Split:
    """The samples of ``class_ids`` relabelled 0..len-1, class names following."""
    ids = list(class_ids)
    remap = np.full(max(len(split.classnames), max(ids, default=0) + 1), -1, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    keep = np.isin(split.labels, ids)
    return Split(split.dataset, split.positions[keep], remap[split.labels[keep]],
                 [split.classnames[i] for i in ids], split.templates)


def fewshot_of_classes(ds, class_ids: Sequence[int], shots: int, seed: int, allow_fewer: bool = False) -> Split:
    """K shots per class among ``class_ids`` (the base classes), positions in the whole split."""
    from ..data import fewshot_indices, select_classes

    sub = select_classes(ds, class_ids, relabel=True)
    chosen = np.flatnonzero(np.isin(ds.targets, list(class_ids)))  # select_classes keeps this order
    if len(chosen) != len(sub):
        raise RuntimeError("select_classes changed its order; positions cannot be mapped back")
    idx = np.asarray(fewshot_indices(sub, shots, seed, allow_fewer=allow_fewer), dtype=np.int64)
    return Split(ds, chosen[idx], sub.targets[idx], list(sub.classnames), _templates(ds))
