"""Gathering features across ranks for contrastive losses.

A contrastive loss needs every rank's features as negatives. Two ways to gather them:

- **with gradient** (:func:`all_gather_with_grad`, the default everywhere): the backward pass
  sums, over ranks, the gradient each rank's loss sends to every slot, and hands each rank the
  part for its own rows. With each rank's loss defined so that the *mean* over ranks equals the
  single-process loss on the global batch (the objectives here are), the gradient DDP averages
  is exactly the single-process gradient (open_clip issue #894 says the same of its ClipLoss).
- **without gradient** (:func:`all_gather_no_grad`): other ranks' features are constants and
  only the local slot (replaced by the local tensor) carries gradient, as open_clip's
  ``gather_with_grad=False``. Cheaper, but it drops the gradient that flows through other
  ranks' losses, so it is not the global-batch gradient.

Our own autograd all-gather (rather than ``torch.distributed.nn.functional.all_gather``) keeps
the backward an ``all_reduce``, which every backend (gloo on CPU included) supports.
All ranks must pass tensors of the same shape (equal local batch sizes; use ``drop_last``).
When ``torch.distributed`` is not initialised, the world is one rank and nothing is gathered.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward: sum over ranks, keep own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world_size = world()
        ctx.rank, ctx.n = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)  # (world * n, ...)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss sends gradient here
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``(n, ...)`` -> ``(world * n, ...)``, rank order, gradient flowing back to every rank."""
    _, world_size = world()
    if world_size == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``(n, ...)`` -> ``(world * n, ...)``; only the local slot keeps its gradient."""
    rank, world_size = world()
    if world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    with torch.no_grad():
        dist.all_gather(parts, tensor.contiguous())
    parts[rank] = tensor
    return torch.cat(parts, dim=0)


def gather(tensor: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Gather a tensor across ranks, with or without gradient through other ranks' losses."""
    return all_gather_with_grad(tensor) if with_grad else all_gather_no_grad(tensor)


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Gather with no gradient at all (for queues of momentum features)."""
    _, world_size = world()
    if world_size == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)
