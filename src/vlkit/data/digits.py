"""``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits), upscaled.

The 8x8 grey levels (0..16) are stretched to 0..255, upscaled bilinearly to ``image_size``
and stored as RGB, dark ink on a light ground by default (``light_on_dark=True`` flips it, as
the raw data is). Class names are the English words "zero".."nine" (text towers know words
better than lone digits); captions use both ("a handwritten digit 3", "the number three").
The split is stratified: within each digit, samples are ordered by a salted hash of their
index and cut 70/10/20, so it is fixed by ``seed`` and the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import UserError
from .catalog import read_classes, register_dataset, view_from_file
from .dataset import ArrayImages, VLDataset
from .splits import hash_order
from .store import cached_build

BUILD_VERSION = 1


@dataclass
class DigitsOptions:
    image_size: int = 32
    light_on_dark: bool = False
    seed: int = 0
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)


def _build(opts: DigitsOptions):
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (N, 8, 8)
    if not opts.light_on_dark:
        grey = 255 - grey
    big = np.stack([np.asarray(Image.fromarray(g).resize((opts.image_size,) * 2, Image.Resampling.BILINEAR))
                    for g in grey])  # (N, S, S)
    images = np.repeat(big[..., None], 3, axis=-1)  # (N, S, S, 3)
    records = [{"digit": int(t), "source_index": i} for i, t in enumerate(d.target)]
    return images, records, {"source": "sklearn.datasets.load_digits"}


def stratified_split(labels: np.ndarray, fractions, seed: int) -> dict[str, list[int]]:
    out = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        members = hash_order(np.flatnonzero(labels == c).tolist(), f"digits:seed={seed}:class={c}")
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        out["train"] += members[:n_train]
        out["val"] += members[n_train:n_train + n_val]
        out["test"] += members[n_train + n_val:]
    return {k: sorted(v) for k, v in out.items()}


@register_dataset("digits", DigitsOptions, views=("digit",), splits=("train", "val", "test", "all"),
                  default_view="digit")
def load_digits_dataset(split: str, opts: DigitsOptions) -> VLDataset:
    if len(opts.fractions) != 3 or min(opts.fractions) < 0 or abs(sum(opts.fractions) - 1) > 1e-6:
        raise UserError(f"digits.fractions {opts.fractions} must be 3 shares that sum to 1, e.g. [0.7, 0.1, 0.2]")
    if opts.image_size < 8:
        raise UserError(f"digits.image_size must be at least 8, got {opts.image_size}")
    params = {"v": BUILD_VERSION, "image_size": opts.image_size, "light_on_dark": opts.light_on_dark}
    built = cached_build("digits", params, lambda: _build(opts))
    cls = read_classes("digits")
    digits = np.array([r["digit"] for r in built.records])
    idx = np.arange(len(digits)) if split == "all" else np.array(
        stratified_split(digits, opts.fractions, opts.seed)[split], dtype=np.int64)
    words = cls["views"]["digit"]["classnames"]
    captions = [[t.format(digit=d, word=words[d]) for t in cls["caption_templates"]] for d in digits[idx]]
    meta = [dict(built.records[i]) for i in idx]
    views = {"digit": view_from_file(cls["views"]["digit"])}
    return VLDataset("digits", split, ArrayImages(built.images[idx]), captions, {"digit": digits[idx]}, meta,
                     views, None, f"digits:{built.content_id}:seed{opts.seed}:{list(opts.fractions)}")
