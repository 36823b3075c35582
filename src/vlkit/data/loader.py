"""A DataLoader with seeded shuffling that resumes from a data position (epoch, batch index).

The order of epoch ``e`` is a permutation drawn from a generator seeded by hash(seed, e), so
it is a function of (seed, epoch) alone: a run stopped after batch ``b`` of epoch ``e`` and
restarted with ``load_state_dict({"epoch": e, "batch_index": b, ...})`` sees exactly the
batches it would have seen (together with :mod:`vlkit.data.collate`, which also makes caption
choice and augmentation per-sample deterministic).

Usage::

    loader = make_loader(ds, batch_size=64, transform=tf, seed=0)
    for batch in loader:           # one epoch from the current position
        ...
        ckpt["data"] = loader.state_dict()   # position of the next batch
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from ..errors import UserError
from .collate import Collate
from .dataset import VLDataset


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The sample order of one epoch, fixed by (seed, epoch)."""
    if not shuffle:
        return list(range(n))
    digest = hashlib.sha256(f"loader:{seed}:{epoch}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randperm(n, generator=g).tolist()


class ResumableLoader:
    """Iterates one epoch per ``iter()``, from the saved position; see the module docstring."""

    def __init__(self, dataset: VLDataset, batch_size: int, collate: Callable, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, num_workers: int = 0, **loader_kwargs):
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.shuffle, self.seed, self.drop_last, self.num_workers = shuffle, seed, drop_last, num_workers
        self.loader_kwargs = loader_kwargs
        self.epoch = self.batch_index = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.seed, "n": len(self.dataset)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n", len(self.dataset)) != len(self.dataset) or state.get("seed", self.seed) != self.seed:
            raise UserError(
                f"data position was saved for {state.get('n')} samples and seed {state.get('seed')}, this loader "
                f"has {len(self.dataset)} and seed {self.seed}; resume with the same data and seed")
        self.epoch, self.batch_index = int(state["epoch"]), int(state["batch_index"])

    def __iter__(self) -> Iterator[dict]:
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle)
        n_batches = len(self)
        order = order[self.batch_index * self.batch_size : n_batches * self.batch_size]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if hasattr(self.collate, "set_epoch"):
            self.collate.set_epoch(self.epoch)
        loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate,
                            num_workers=self.num_workers, **self.loader_kwargs)
        for batch in loader:
            self.batch_index += 1
            yield batch
        self.epoch, self.batch_index = self.epoch + 1, 0


def make_loader(dataset: VLDataset, batch_size: int, transform: Callable | None = None, caption: str = "random",
                shuffle: bool = True, seed: int = 0, drop_last: bool = False, num_workers: int = 0,
                start: tuple[int, int] = (0, 0), **loader_kwargs) -> ResumableLoader:
    """A :class:`ResumableLoader` with :class:`~vlkit.data.collate.Collate`; ``start`` = (epoch, batch)."""
    loader = ResumableLoader(dataset, batch_size, Collate(transform, caption, seed), shuffle, seed,
                             drop_last, num_workers, **loader_kwargs)
    loader.epoch, loader.batch_index = int(start[0]), int(start[1])
    return loader
