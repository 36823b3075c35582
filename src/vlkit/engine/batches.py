"""Where the loop's batches come from, in a way that can restart at any position.

The loop needs two things of its data (the :class:`BatchSource` protocol):

- ``len(source)``: batches per epoch (the same on every rank);
- ``source.batches(epoch, start)``: an iterator over that epoch's batches from index ``start``.

Exact resume follows: a checkpoint records (epoch, next batch) and the resumed run asks for
``batches(epoch, next batch)``. :class:`DatasetBatches` is that source over a map-style torch
Dataset and a ``collate_fn``: the order of epoch ``e`` is a permutation drawn from
``(seed, e)`` alone (not from the global RNG, so skipping or restarting does not shift any other
random draw), cut into global batches of ``batch_size``. In a distributed run each rank takes
its contiguous slice of every global batch, so the ranks together see exactly the batch a
single process would see; ``batch_size`` must divide by the world size. Incomplete last batches
are dropped (every step sees a full global batch; DDP needs equal shards).

With ``num_workers > 0`` a DataLoader reads the same index lists in worker processes, and the
batches stay exact with :class:`vlkit.data.collate.Collate`: it reseeds every augmented sample
from (seed, epoch, index), so no draw depends on the process that collates or on what it drew
before, and a resumed run sees the same crops as an uninterrupted one. A ``collate_fn`` that
draws from the global RNG without reseeding is exact only with ``num_workers=0`` (the default),
where it uses the main process's RNG, which checkpoints restore.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist

from ..errors import UserError


@runtime_checkable
class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]: ...


def default_collate(samples: list[Any]) -> Any:
    return torch.utils.data.default_collate(samples)


class DatasetBatches:
    """Seeded, shardable, restartable batches over ``dataset`` (``batch_size`` is global)."""

    def __init__(
        self,
        dataset: Sequence[Any],
        batch_size: int,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if len(dataset) < batch_size:
            raise UserError(
                f"the dataset has {len(dataset)} samples, fewer than one batch of {batch_size}; "
                "lower batch_size"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_fn = collate_fn or default_collate
        self.seed = seed
        self.shuffle = shuffle
        self.num_workers = num_workers
        self._rank, self._world = rank, world_size

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def world(self) -> tuple[int, int]:
        """(rank, world size): as given, else from the process group the engine joined."""
        if self._world is not None:
            return self._rank or 0, self._world
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch``: a permutation drawn from (seed, epoch) only."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def indices(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This rank's sample indices for the batches ``start..`` of ``epoch``."""
        rank, world = self.world()
        if self.batch_size % world:
            raise UserError(
                f"batch_size {self.batch_size} does not divide among {world} processes; "
                f"use a multiple of {world}"
            )
        local = self.batch_size // world
        order = self.order(epoch)
        out = []
        for b in range(start, len(self)):
            global_batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            out.append(global_batch[rank * local : (rank + 1) * local].tolist())
        return out

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        index_lists = self.indices(epoch, start)
        set_epoch = getattr(self.collate_fn, "set_epoch", None)
        if set_epoch is not None:  # per-epoch caption choice and augmentation (vlkit.data.collate)
            set_epoch(epoch)
        if self.num_workers <= 0:
            # A plain loop: no DataLoader, so no draw from the global RNG when it starts.
            return (self.collate_fn([self.dataset[i] for i in idx]) for idx in index_lists)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=index_lists,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch),
        )
        return iter(loader)
