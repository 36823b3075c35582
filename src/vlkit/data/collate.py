"""Batches from samples: ``collate_fn(transform, caption, seed)``.

A batch is ``{"images": (B, 3, H, W) float, "texts": list[str], "captions": list[list[str]],
"labels": (B,) long, "index": (B,) long}``. ``caption`` picks the text of each sample:

- ``"first"``: its first caption;
- ``"random"``: one caption chosen by a hash of (seed, epoch, index), so the choice is the same
  with any number of workers and after a resume (call ``set_epoch`` each epoch);
- ``"all"``: every caption, flattened into ``texts``, with ``"text_index"`` (T,) giving the batch
  position each text belongs to (for multi-positive retrieval losses).

Random train augmentations draw from torch's CPU generator reseeded per sample from
(seed, epoch, index), and its state is put back afterwards, so they too survive a resume exactly
and leave the caller's random state untouched. ``restyle`` (a :class:`vlkit.data.styles.StyleMix`)
redraws an image in a style chosen the same way, before the transform: style randomisation. Only the CPU generator is touched:
``torch.manual_seed`` would also reseed every accelerator's generator, which costs about 0.4 ms a
call (a twentieth of a small model's training step at batch 128) and would leave those
generators reseeded.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch

from ..errors import unknown_name
from .dataset import Sample

MODES = ("random", "first", "all")


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


class Collate:
    """The collate callable; picklable, so DataLoader workers can use it."""

    def __init__(self, transform: Callable | None, caption: str = "random", seed: int = 0,
                 restyle: Callable | None = None):
        if caption not in MODES:
            raise unknown_name("caption mode", caption, MODES)
        self.transform, self.caption, self.seed, self.epoch = transform, caption, seed, 0
        self.restyle = restyle  # restyle(image, epoch, index): style randomisation (data.styles.StyleMix)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _pil(self, sample: Sample, index: int):
        return sample.image if self.restyle is None else self.restyle(sample.image, self.epoch, index)

    def _image(self, sample: Sample, index: int) -> torch.Tensor:
        image = self._pil(sample, index)
        if getattr(self.transform, "train", False):
            state = torch.get_rng_state()
            try:
                torch.default_generator.manual_seed(_seed("aug", self.seed, self.epoch, index))
                return self.transform(image)
            finally:
                torch.set_rng_state(state)
        return self.transform(image)

    def __call__(self, samples: Sequence[Sample]) -> dict:
        index = [int(s.meta.get("index", i)) for i, s in enumerate(samples)]
        out = {
            "images": (torch.stack([self._image(s, i) for s, i in zip(samples, index)])  # (B, 3, H, W)
                       if self.transform is not None else [self._pil(s, i) for s, i in zip(samples, index)]),
            "captions": [list(s.captions) for s in samples],
            "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }
        if self.caption == "first":
            out["texts"] = [c[0] for c in out["captions"]]
        elif self.caption == "random":
            out["texts"] = [c[_seed("cap", self.seed, self.epoch, i) % len(c)] for c, i in zip(out["captions"], index)]
        else:
            out["texts"] = [t for c in out["captions"] for t in c]
            out["text_index"] = torch.tensor([b for b, c in enumerate(out["captions"]) for _ in c], dtype=torch.long)
        return out


def collate_fn(transform: Callable | None, caption: str = "random", seed: int = 0) -> Collate:
    """The contract's entry point; see the module docstring."""
    return Collate(transform, caption, seed)
