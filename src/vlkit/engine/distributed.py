"""Distributed data parallel (DDP) helpers for runs launched with torchrun.

torchrun starts one process per device and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`init_distributed` reads them and joins the process group: gloo on CPU (so a laptop can
test a multi-process run), nccl on CUDA. A run launched under torchrun with more than one
process is distributed even if the config forgot to say so (otherwise every process would train
its own copy into the same directory); a config that asks for ``distributed: true`` without
torchrun's environment is a :class:`~vlkit.errors.UserError`.

DDP averages gradients over the ranks during ``backward``, so a loss that is a mean over the
local batch gives the gradient of the mean over the global batch (each rank holds an equal
slice). Losses that need other ranks' features (CLIP InfoNCE with gathered negatives) gather
them themselves (``vlkit.objectives``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class DistInfo:
    """Where this process stands: rank, world size, its device, and who owns the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: not distributed
    owns_group: bool = False  # True when init_distributed created the group (and must end it)

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS)


def is_main_process() -> bool:
    """Whether this process is rank 0 (or not under torchrun): the one that prints summaries."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """The one device rule of every subcommand (pretrain, adapt, eval; ``--device``).

    ``"auto"``: this rank's GPU when CUDA is there, else the CPU; ``"cpu"``; ``"cuda"`` (this
    rank's GPU) or ``"cuda:N"`` (GPU N), refused in one line when no GPU is visible.
    """
    requested = str(requested).strip().lower()
    index = requested.partition(":")[2] if requested.startswith("cuda:") else None
    if requested not in ("auto", "cpu", "cuda") and not (index and index.isdigit()):
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda (or cuda:N)")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {requested} asked for, but no CUDA GPU is visible; use --device cpu (or auto)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if index is not None:
        if int(index) >= torch.cuda.device_count():
            raise UserError(f"device {requested} asked for, but only {torch.cuda.device_count()} GPU(s) are "
                            f"visible; use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", int(index))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(requested: bool = False, device: str = "auto") -> DistInfo:
    """Join torchrun's process group when there is one; refuse ``distributed`` without it."""
    if not launched_by_torchrun():
        if requested:
            raise UserError(
                "distributed training asked for, but this process was not started by torchrun; "
                "run it with torchrun --nproc_per_node N ... (or set distributed: false)"
            )
        return DistInfo(device=pick_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = pick_device(device, local_rank)
    if world == 1 and not requested:
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, init_method="env://")
        owns = True
    else:
        backend = dist.get_backend()
    return DistInfo(rank, world, local_rank, dev, backend, owns)


def cleanup(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``module`` when distributed and it has trainable parameters; else return it.

    DDP broadcasts rank 0's parameters and buffers when it wraps, so every rank starts equal.
    """
    if not info.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over the ranks (the same tensor back when not distributed)."""
    if not info.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any (so all ranks stop together)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere); ``[obj]`` when not distributed."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
