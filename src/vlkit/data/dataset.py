"""The dataset type every part of vlkit consumes: :class:`VLDataset` of :class:`Sample`.

A dataset is three parallel columns (images, captions, labels per view) plus per-sample
metadata. Images come from an :class:`ImageSource` so that embedded datasets (one uint8 array)
and user datasets (files or tar members, decoded lazily) look the same. A *view* picks which
label a sample reports as ``label`` and which class names and prompt templates go with it;
switching views or taking a subset shares the storage, it never copies images.

torch is not imported here: a DataLoader only needs ``__len__`` and ``__getitem__``, and
``vlkit data list`` should start fast.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import UserError, unknown_name


@dataclass
class Sample:
    """One example: an RGB image, its captions (never empty), its labels and metadata."""

    image: Image.Image
    captions: list[str]
    label: int  # label of the dataset's current view; -1 when the view has none
    labels: dict[str, int]  # view name -> label
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    """A way of labelling the samples: class names (index = label) and prompt templates."""

    classnames: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None
    description: str = ""
    # a horizontal flip keeps every label of this view (natural photos); False where it changes
    # what the image shows (digits, arrows, text): few-shot augmentation reads it
    flip_safe: bool = True


class ImageSource:
    """Random access to images by position. Subclasses decode lazily where it pays."""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Where image ``i`` comes from, for error messages."""
        return f"image #{i}"


class ArrayImages(ImageSource):
    """Images held as one uint8 array (N, H, W, 3): embedded datasets."""

    def __init__(self, array: np.ndarray):
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (N, H, W, 3) array, got {array.dtype} {array.shape}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.array[i], mode="RGB")


class BytesImages(ImageSource):
    """Images read as encoded bytes by a callable (a file, a tar member) and decoded on access."""

    def __init__(self, readers: Sequence[Callable[[], bytes]], names: Sequence[str]):
        self.readers = list(readers)
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.readers)

    def load(self, i: int) -> Image.Image:
        try:
            with Image.open(io.BytesIO(self.readers[i]())) as im:
                return im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"cannot decode image {self.names[i]} ({e}); replace or delete the file") from None

    def describe(self, i: int) -> str:
        return self.names[i]


def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


class VLDataset:
    """Images with captions, labels per view and metadata; see docs/architecture.md, "Data".

    ``content_id`` is a stable hash of everything the samples are made of (set by the
    builder); :meth:`fingerprint` adds split, view and selected indices to it, which is what
    feature caches and few-shot splits are keyed on.
    """

    def __init__(
        self,
        name: str,
        split: str,
        images: ImageSource,
        captions: Sequence[list[str]],
        labels: dict[str, np.ndarray],
        meta: Sequence[dict],
        views: dict[str, View],
        view: str | None,
        content_id: str,
        indices: np.ndarray | None = None,
        info: dict | None = None,
    ):
        n = len(images)
        if len(captions) != n or len(meta) != n or any(len(v) != n for v in labels.values()):
            raise ValueError(f"{name}: columns differ in length")
        self.name, self.split = name, split
        self._images, self._captions, self._meta = images, captions, meta
        self._labels = {k: np.asarray(v, dtype=np.int64) for k, v in labels.items()}
        self.views = dict(views)
        if view is not None and view not in self.views:
            raise unknown_name(f"view of dataset {name!r}", view, self.views)
        self.view = view
        self.content_id = content_id
        self.info = dict(info or {})  # build facts: skipped files, counts, source paths
        self._indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)

    # -- the contract -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        j = int(self._indices[i])
        labels = {k: int(v[j]) for k, v in self._labels.items()}
        return Sample(
            image=self._images.load(j),
            captions=list(self._captions[j]),
            label=labels.get(self.view, -1) if self.view else -1,
            labels=labels,
            meta={**self._meta[j], "index": int(i) % len(self)},  # position in this dataset
        )

    @property
    def classnames(self) -> list[str] | None:
        v = self.views.get(self.view) if self.view else None
        return list(v.classnames) if v and v.classnames is not None else None

    @property
    def templates(self) -> list[str] | None:
        v = self.views.get(self.view) if self.view else None
        return list(v.templates) if v and v.templates is not None else None

    @property
    def flip_safe(self) -> bool:
        """Whether a horizontal flip keeps the current view's labels (True without a view)."""
        v = self.views.get(self.view) if self.view else None
        return bool(v.flip_safe) if v is not None else True

    @property
    def targets(self) -> np.ndarray:
        """Labels of the current view, (N,) int64; -1 everywhere when there is no view."""
        if self.view is None or self.view not in self._labels:
            return np.full(len(self), -1, dtype=np.int64)
        return self._labels[self.view][self._indices]

    def fingerprint(self) -> str:
        """Stable hash of content, split, view and the selected samples (16 hex chars)."""
        return _hash(self.content_id, self.split, self.view, self._indices.tobytes())[:16]

    def with_view(self, view: str | None) -> "VLDataset":
        return self._derive(view=view, indices=self._indices)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "VLDataset":
        """Samples at ``indices`` (positions in this dataset, or a boolean mask), sharing storage."""
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} samples")
        return self._derive(view=self.view, indices=self._indices[idx])

    # -- helpers used by the rest of vlkit ----------------------------------------------------
    def captions_at(self, i: int) -> list[str]:
        """Captions of sample ``i`` without decoding its image."""
        return list(self._captions[int(self._indices[i])])

    def meta_at(self, i: int) -> dict:
        return dict(self._meta[int(self._indices[i])])

    def labels_of(self, view: str) -> np.ndarray:
        if view not in self._labels:
            raise unknown_name(f"view of dataset {self.name!r}", view, self._labels)
        return self._labels[view][self._indices]

    def image_source(self, i: int) -> str:
        return self._images.describe(int(self._indices[i]))

    def _derive(self, view: str | None, indices: np.ndarray) -> "VLDataset":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if view is not None and view not in self.views:
            raise unknown_name(f"view of dataset {self.name!r}", view, self.views)
        new.view, new._indices = view, indices
        return new

    def __repr__(self) -> str:
        n_cls = len(self.classnames) if self.classnames is not None else None
        return (
            f"VLDataset({self.name!r}, split={self.split!r}, view={self.view!r}, n={len(self)}, "
            f"classes={n_cls}, views={sorted(self.views)})"
        )
