"""Deterministic splits: train/val/test partitions, K-shot samples, base/new classes.

Few-shot results in the literature differ between codebases partly because the same "seed 1"
draws different shots depending on what the code sampled first (CLIP-LoRA draws validation
before training, CoOp after). Here no split uses a shared random generator: each item gets a
rank ``sha256(salt, item)``, where the salt holds (dataset fingerprint, seed, K, purpose), and
a split takes the lowest ranks. The result depends on those inputs only, never on call order
or on the numpy version, and is saved as JSON under the cache for inspection and reuse.

Protocol (CoOp, "Learning to Prompt for Vision-Language Models", arXiv:2109.01134):
K shots per class from the train split; validation min(K, 4) per class from the val split;
base-to-new (CoCoOp, arXiv:2203.05557): sort the labels, the first ceil(n/2) are base.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import UserError
from ..paths import cache_dir
from .dataset import VLDataset
from .store import atomic_write_json


def rank(salt: str, item: Any) -> str:
    return hashlib.sha256(f"{salt}\x00{item}".encode()).hexdigest()


def hash_order(items: Iterable, salt: str) -> list:
    """``items`` sorted by their salted hash: a permutation fixed by (salt, items)."""
    return sorted(items, key=lambda x: rank(salt, x))


def partition_keys(keys: Sequence[str], fractions: Sequence[float], seed: int, salt: str,
                   names: Sequence[str] = ("train", "val", "test")) -> dict[str, list[str]]:
    """Split ``keys`` into named parts of the given shares; the last part takes the rest."""
    order = hash_order(sorted(set(keys)), f"{salt}:seed={seed}")
    out, start = {}, 0
    for i, (name, frac) in enumerate(zip(names, fractions)):
        stop = len(order) if i == len(names) - 1 else start + int(round(frac * len(order)))
        out[name] = sorted(order[start:stop])
        start = stop
    return out


def saved_json(path: Path, make: Callable[[], Any]) -> Any:
    """Read ``path`` if it holds valid JSON, else compute ``make()`` and save it atomically."""
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            pass  # a damaged file is recomputed: the content is a pure function of its name
    value = make()
    atomic_write_json(path, value)
    return json.loads(json.dumps(value))  # the same types whether read or computed


def _per_class(labels: np.ndarray, k: int, salt: str, allow_fewer: bool, classnames, where: str) -> list[int]:
    chosen = []
    for c in sorted(set(labels.tolist()) - {-1}):
        members = np.flatnonzero(labels == c).tolist()
        if len(members) < k and not allow_fewer:
            name = classnames[c] if classnames and 0 <= c < len(classnames) else str(c)
            raise UserError(
                f"class {name!r} has {len(members)} samples in the {where} split, fewer than {k} shots; "
                "use fewer shots or pass allow_fewer=True to take all it has"
            )
        chosen += hash_order(members, f"{salt}:class={c}")[:k]
    return sorted(chosen)


def fewshot_indices(dataset: VLDataset, shots: int, seed: int, purpose: str | None = None,
                    allow_fewer: bool = False) -> list[int]:
    """``shots`` samples per class of the current view (positions in ``dataset``).

    Keyed by (dataset fingerprint, seed, shots, purpose), so asking for the 16-shot train set
    before or after the 4-shot validation set gives the same indices. Classes with fewer
    samples than ``shots`` raise UserError unless ``allow_fewer`` (then they give all they have).
    """
    if shots < 1:
        raise UserError(f"shots must be at least 1, got {shots}")
    if dataset.view is None:
        raise UserError(f"few-shot sampling needs a labelled view; {dataset.name} has none selected")
    purpose = purpose or dataset.split
    fp = dataset.fingerprint()
    salt = f"fewshot:{fp}:seed={seed}:k={shots}:{purpose}"
    fewer = "-fewer" if allow_fewer else ""
    path = cache_dir("data", "splits", dataset.name) / f"fewshot-{fp}-seed{seed}-k{shots}-{purpose}{fewer}.json"
    return saved_json(path, lambda: _per_class(
        dataset.targets, shots, salt, allow_fewer, dataset.classnames, dataset.split))


def fewshot_splits(train: VLDataset, val: VLDataset | None, shots: int, seed: int,
                   allow_fewer: bool = False) -> tuple[VLDataset, VLDataset | None]:
    """The CoOp protocol: K shots per class from train, min(K, 4) per class from val."""
    tr = train.subset(fewshot_indices(train, shots, seed, "train", allow_fewer))
    if val is None:
        return tr, None
    va = val.subset(fewshot_indices(val, min(shots, 4), seed, "val", allow_fewer))
    return tr, va


def base_new_split(classnames: Sequence[str], key: str = "") -> dict[str, list[int]]:
    """Base-to-new classes (CoOp/CoCoOp protocol): sorted labels, the first ceil(n/2) are base.

    ``key`` (e.g. the dataset name) names the JSON record saved under the cache.
    """
    n = len(classnames)
    if n < 2:
        raise UserError(f"base/new split needs at least 2 classes, got {n}")
    labels = list(range(n))
    cut = math.ceil(n / 2)
    out = {"base": labels[:cut], "new": labels[cut:]}
    digest = hashlib.sha256("\x00".join(classnames).encode()).hexdigest()[:12]
    atomic_write_json(cache_dir("data", "splits", key or "classes") / f"base-new-{digest}.json",
                      {**out, "classnames": list(classnames)})
    return out


def select_classes(dataset: VLDataset, class_ids: Sequence[int], relabel: bool = True) -> VLDataset:
    """Samples of the given classes of the current view; with ``relabel`` the labels become
    0..len(class_ids)-1 and the class names follow (what base-to-new evaluation needs)."""
    from dataclasses import replace

    ids = list(class_ids)
    mask = np.isin(dataset.targets, ids)
    sub = dataset.subset(np.flatnonzero(mask))
    if not relabel:
        return sub
    remap = np.full(max(len(dataset.classnames or []), max(ids, default=0) + 1), -1, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    view = dataset.view
    new = sub._derive(view=view, indices=sub._indices)
    new._labels = {**sub._labels, view: np.where(sub._labels[view] >= 0, remap[sub._labels[view]], -1)}
    old = dataset.views[view]
    names = tuple(old.classnames[i] for i in ids) if old.classnames else None
    new.views = {**sub.views, view: replace(old, classnames=names)}
    new.content_id = f"{dataset.content_id}:classes={','.join(map(str, ids))}"
    return new
