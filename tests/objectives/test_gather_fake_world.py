"""The gather functions on a simulated two-rank world, by hand, in one process.

``test_ddp_equivalence.py`` runs two real gloo processes (slow to start; left out of the
mutation run). Here ``torch.distributed`` is replaced by a fake in which this process is rank 1
of 2 and rank 0 holds a known tensor, so each function's output and gradient can be written out:

- forward of every gather: ``cat([rank 0's rows, our rows])``;
- with gradient: backward all-reduces (sums) the gradient over ranks and keeps our slice, rows
  ``n:2n`` (rank 1); rank 0's contribution is a known tensor;
- without gradient: only our own slot carries gradient; ``concat_all_gather`` carries none.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as torch_dist

from vlkit.objectives import distributed

OTHER = torch.tensor([[10.0, 20.0], [30.0, 40.0]])  # rank 0's rows (n = 2, D = 2)
OTHER_GRAD = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # what rank 0's loss sends


@pytest.fixture
def rank_one_of_two(monkeypatch):
    calls = []

    def all_gather(parts, tensor):
        calls.append("all_gather")
        assert len(parts) == 2 and tensor.is_contiguous()
        parts[0].copy_(OTHER)
        parts[1].copy_(tensor)

    def all_reduce(tensor, op):
        calls.append("all_reduce")
        assert op == torch_dist.ReduceOp.SUM
        tensor.add_(OTHER_GRAD)

    fake = SimpleNamespace(all_gather=all_gather, all_reduce=all_reduce, ReduceOp=torch_dist.ReduceOp)
    monkeypatch.setattr(distributed, "dist", fake)
    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    return calls


def test_gather_with_grad_by_hand(rank_one_of_two):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = distributed.gather(x)  # with_grad is the default
    assert torch.equal(out, torch.cat([OTHER, x.detach()]))
    w = torch.arange(8.0).view(4, 2)
    (out * w).sum().backward()
    assert torch.equal(x.grad, (w + OTHER_GRAD)[2:4])  # summed over ranks, our rows
    assert rank_one_of_two == ["all_gather", "all_reduce"]


def test_gather_without_grad_keeps_only_the_local_slot(rank_one_of_two):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = distributed.gather(x, with_grad=False)
    assert torch.equal(out, torch.cat([OTHER, x.detach()]))
    w = torch.arange(8.0).view(4, 2)
    (out * w).sum().backward()
    assert torch.equal(x.grad, w[2:4])  # no all-reduce: other ranks' losses send nothing
    assert rank_one_of_two == ["all_gather"]


def test_concat_all_gather_has_no_gradient(rank_one_of_two):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = distributed.concat_all_gather(x)
    assert torch.equal(out, torch.cat([OTHER, x.detach()])) and not out.requires_grad


def test_world_reads_an_initialised_group():
    assert distributed.world() == (0, 1)  # not initialised: one rank
    torch_dist.init_process_group("gloo", store=torch_dist.HashStore(), rank=0, world_size=1)
    try:
        assert distributed.world() == (0, 1)
        x = torch.ones(2, 2, requires_grad=True)
        assert distributed.all_gather_with_grad(x) is x  # a world of one gathers nothing
        assert distributed.all_gather_no_grad(x) is x
    finally:
        torch_dist.destroy_process_group()
