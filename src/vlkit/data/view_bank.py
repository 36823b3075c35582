"""Per-position feature banks of seeded augmented views: frozen computations done once.

A :class:`ViewBank` holds one feature row per dataset position for one (frozen computation,
data, transform, view, aug seed) key, grows as positions are asked for, and lives on disk as a
checked safetensors file. Two users share it:

- adaptation (:class:`vlkit.adapt.features.FeatureStore`): projected image features of ``V``
  augmented views of the few-shot images (Tip-Adapter's 10 views);
- pretraining (:class:`vlkit.pretrain.features.FrozenStageViews`): the output of a tower's frozen
  pretrained stage (EfficientNet-Lite0's first stages) for ``K`` augmented views of every
  training image, so each step runs only the trainable part.

View ``v`` of the image at position ``i`` is drawn by :class:`~vlkit.data.collate.Collate` with
``set_epoch(v)``: a pure function of (aug seed, v, i), so a bank computed in another process
holds the same views (:func:`view_encoder`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch


class ViewBank:
    """Features of one (image path, split, transform, view) per dataset position; grows on demand.

    The file is written and read through :func:`vlkit.data.cache.write_tensors` /
    :func:`~vlkit.data.cache.read_tensors` (key, dtypes, shapes and sha256 in the metadata; all
    finite); on top, a bank must hold one feature row per position, positions non-negative,
    sorted and unique. A bank that fails any check is recomputed with one warning line naming
    its file, never trusted and never a crash.
    """

    def __init__(self, key: dict, root: Path):
        self.key = json.dumps(key, sort_keys=True, default=repr)
        self.path = root / f"bank-{hashlib.sha256(self.key.encode()).hexdigest()[:32]}.safetensors"
        self.positions = np.zeros(0, dtype=np.int64)  # sorted
        self.features: torch.Tensor | None = None  # (M, D), rows follow ``positions``
        self._read()

    def get(self, positions: np.ndarray, compute: Callable[[np.ndarray], torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(features (len(positions), D), number of positions computed now)."""
        positions = np.asarray(positions, dtype=np.int64)
        missing = np.setdiff1d(np.unique(positions), self.positions)
        if missing.size:
            new = compute(missing).detach().float().cpu()  # (m, D)
            if self.features is not None and new.shape[1:] != self.features.shape[1:]:
                warnings.warn(f"vlkit: feature bank {self.path} holds features of width {self.features.shape[1]} "
                              f"where the model gives {new.shape[1]}; recomputing it", stacklevel=2)
                self.positions, self.features = np.zeros(0, dtype=np.int64), None
                missing = np.unique(positions)
                new = compute(missing).detach().float().cpu()  # (m, D)
            allpos = np.concatenate([self.positions, missing])
            feats = new if self.features is None else torch.cat([self.features, new])
            order = np.argsort(allpos, kind="stable")
            self.positions, self.features = allpos[order], feats[torch.from_numpy(order)]
            self._write()
        rows = np.searchsorted(self.positions, positions)
        return self.features[torch.from_numpy(rows)], int(missing.size)

    def _read(self) -> None:
        from .cache import read_tensors

        got = read_tensors(self.path, self.key, check=_bank_problem, what="feature bank")
        if got is not None:
            self.positions, self.features = got["positions"].numpy().astype(np.int64), got["features"]

    def _write(self) -> None:
        from .cache import all_finite, write_tensors

        tensors = {"positions": torch.from_numpy(self.positions), "features": self.features}
        if not all_finite(tensors):
            warnings.warn(f"vlkit: features computed for feature bank {self.path} hold NaN or infinite values; "
                          "not caching them (check the model's weights)", stacklevel=3)
            return
        write_tensors(self.path, tensors, self.key)


def _bank_problem(tensors: dict) -> str | None:
    """What makes stored bank tensors unusable (a short phrase), or None."""
    if set(tensors) != {"positions", "features"}:
        return f"holds tensors {sorted(tensors)} where positions and features were expected"
    pos, feats = tensors["positions"], tensors["features"]
    if pos.dim() != 1 or pos.dtype != torch.int64 or feats.dim() != 2:
        return f"holds positions {list(pos.shape)} {pos.dtype} and features {list(feats.shape)}"
    if feats.shape[0] != pos.shape[0]:
        return f"holds {feats.shape[0]} feature rows for {pos.shape[0]} positions"
    if pos.numel() and (pos[0] < 0 or bool((pos[1:] <= pos[:-1]).any())):
        return "holds positions that are negative, unsorted or repeated"
    return None


def view_encoder(dataset, transform, view, aug_seed: int, encode: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int = 256, device: torch.device | str = "cpu") -> Callable[[np.ndarray], torch.Tensor]:
    """A ``compute`` for :meth:`ViewBank.get`: the images at ``positions``, as view ``view``
    (``"eval"``: the un-augmented transform) drawn with ``aug_seed``, through ``encode``
    ((b, 3, H, W) -> (b, ...)), flattened to rows (b, F)."""
    from .collate import Collate

    collate = Collate(transform, caption="first", seed=aug_seed)
    if view != "eval":
        collate.set_epoch(int(view))  # view v of position i: seeded by (aug_seed, v, i)

    def compute(positions: np.ndarray) -> torch.Tensor:
        out = []
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            images = collate([dataset[int(i)] for i in chunk])["images"].to(device)
            with torch.no_grad():
                out.append(encode(images).float().cpu().flatten(1))  # (b, F)
        return torch.cat(out)

    return compute
