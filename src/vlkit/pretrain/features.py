"""Frozen towers encoded once: pooled features of every caption / image, from the feature cache.

In LiT-style alignment (a locked, pretrained text tower) and in SAIL (both towers locked) the
locked side sees no augmentation, so its output for a given input never changes. open_clip's
``--lock-text`` still runs that tower forward every step; vlkit encodes each distinct input once
(keyed by the tower's fingerprint and the data's) and training looks rows up by index.

An image tower whose first layers are frozen and pretrained (convvit's ``pretrained_stem``) sees
augmented images, yet those layers' output for a given view never changes either:
:class:`FrozenStageViews` computes it once for ``K`` seeded augmented views of every image (the
data layer's :class:`~vlkit.data.view_bank.ViewBank`, keyed by the frozen weights, the data, the
transform, the view and the aug seed) and each step picks one view per image, so a step runs
only the trainable part of the tower.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..data.cache import FeatureCache
from ..data.collate import _seed
from ..data.view_bank import ViewBank, view_encoder
from ..engine.progress import Progress
from ..paths import cache_dir


class FrozenTextFeatures:
    """Pooled text-tower output (before the head) for every distinct caption of a dataset."""

    def __init__(self, model, captions: Sequence[str], data_fingerprint: str,
                 cache: FeatureCache | None = None, batch_size: int = 256, progress: bool = False):
        self.texts = list(dict.fromkeys(captions))  # distinct, first-seen order
        self.row = {t: i for i, t in enumerate(self.texts)}
        key = {"model": model.fingerprint("text"), "data": data_fingerprint, "transform": "captions",
               "view": 0, "n": len(self.texts)}
        compute = lambda: _encode_batches(self.texts, model.encode_text_pooled, batch_size, progress, "text")  # noqa: E731
        self.features = (cache or FeatureCache()).get(key, compute, rows=len(self.texts))  # (n_texts, W)

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        idx = torch.tensor([self.row[t] for t in texts], dtype=torch.long)
        return self.features[idx]  # (B, W)


class FrozenImageFeatures:
    """Pooled image-tower output for every image of a dataset, un-augmented (eval transform)."""

    def __init__(self, model, dataset, cache: FeatureCache | None = None, batch_size: int = 256,
                 progress: bool = False):
        transform = model.preprocess(train=False)
        key = {"model": model.fingerprint("visual"), "data": dataset.fingerprint(),
               "transform": repr(transform), "view": 0}

        def images(i0: int, i1: int) -> torch.Tensor:
            return torch.stack([transform(dataset[i].image) for i in range(i0, i1)])  # (b, 3, H, W)

        def compute() -> torch.Tensor:
            out = []
            with Progress(len(dataset), "encoding images", unit="image", enabled=progress, leave=False) as shown:
                for i0 in range(0, len(dataset), batch_size):
                    i1 = min(i0 + batch_size, len(dataset))
                    with torch.no_grad():
                        out.append(model.encode_image_pooled(images(i0, i1)))
                    shown.update(i1 - i0)
            return torch.cat(out)

        self.features = (cache or FeatureCache()).get(key, compute, rows=len(dataset))  # (N, W)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        return self.features[index]  # (B, W)


class FrozenStageViews:
    """The frozen stage's output (B, C, h, w) for ``n_views`` augmented views of every image.

    View ``v`` of image ``i`` is what :class:`~vlkit.data.collate.Collate` draws with seed
    ``aug_seed`` at epoch ``v``; in epoch ``e`` image ``i`` reads view ``hash(seed, e, i) % K``.
    ``computed`` counts images pushed through the frozen stage (0 when every bank was on disk).
    """

    def __init__(self, stage, dataset, transform, image_size: int, n_views: int, seed: int = 0, aug_seed: int = 0,
                 batch_size: int = 256, root=None, progress: bool = False):
        self.n_views, self.seed, self.computed = int(n_views), int(seed), 0
        positions = np.arange(len(dataset))
        key = {"kind": "pretrain.frozen_stage", "stage": stage.fingerprint(), "data": dataset.fingerprint(),
               "transform": repr(transform), "aug_seed": int(aug_seed)}
        root = cache_dir("features", "pretrain") if root is None else root
        views = []
        with Progress(self.n_views, "encoding views", unit="view", enabled=progress, leave=False) as shown:
            for v in range(self.n_views):
                compute = view_encoder(dataset, transform, v, aug_seed, stage, batch_size)
                feats, n = ViewBank({**key, "view": v}, root).get(positions, compute)
                views.append(feats)  # (N, C * h * w)
                self.computed += n
                shown.update(1)
        with torch.no_grad():  # (1, C, h, w): the row layout
            self.shape = tuple(stage(torch.zeros(1, 3, image_size, image_size)).shape[1:])
        self.features = torch.stack(views)  # (K, N, C * h * w)

    def lookup(self, index: torch.Tensor, epoch: int) -> torch.Tensor:
        view = torch.tensor([_seed("view", self.seed, epoch, int(i)) % self.n_views for i in index])
        return self.features[view, index].view(len(index), *self.shape)  # (B, C, h, w)


def _encode_batches(items: Sequence, encode: Callable, batch_size: int, progress: bool, what: str):
    out = []
    with Progress(len(items), f"encoding {what}s", unit=what, enabled=progress, leave=False) as shown:
        for i0 in range(0, len(items), batch_size):
            chunk = list(items[i0 : i0 + batch_size])
            with torch.no_grad():
                out.append(encode(chunk))
            shown.update(len(chunk))
    return torch.cat(out)
