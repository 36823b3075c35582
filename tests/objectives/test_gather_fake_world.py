"""The gathers and the rank-dependent parts of the losses on a simulated two-rank world, by hand.

``test_ddp_equivalence.py`` runs two real gloo processes (slow to start; left out of the
mutation run). Here ``torch.distributed`` is replaced by a fake in which this process is one rank
of two and the other rank holds known rows, so each output and gradient can be written out:

- forward of every gather: the two ranks' rows in rank order;
- with gradient: backward all-reduces (sums) the gradient over ranks and keeps this rank's rows;
  the other rank's contribution is a known tensor;
- without gradient: only this rank's slot carries gradient; ``concat_all_gather`` carries none;
- CLIP / LightCLIP with ``local_loss``: this rank's rows against all columns, positives at
  ``rank * B + i``; SigLIP / SAIL: this rank's block of columns holds the positives.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from vlkit.objectives import ClipConfig, ClipLoss, LightClipConfig, LightClipLoss, SigLipLoss, distributed
from vlkit.objectives import clip as clip_module
from vlkit.objectives import sail as sail_module
from vlkit.objectives import siglip as siglip_module
from vlkit.objectives.sail import SailLoss

N, D = 2, 3  # rows per rank, width (different, so a swapped dimension shows)
OTHER = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # the other rank's rows
OTHER_GRAD = torch.arange(1.0, 13.0).view(4, 3)  # what the other rank's loss sends back


def _fake_world(monkeypatch, rank):
    calls = []

    def all_gather(parts, tensor):
        calls.append("all_gather")
        assert len(parts) == 2 and tensor.is_contiguous()
        parts[rank].copy_(tensor)
        parts[1 - rank].copy_(OTHER)

    def all_reduce(tensor, op):
        calls.append("all_reduce")
        assert op == torch_dist.ReduceOp.SUM
        tensor.add_(OTHER_GRAD)

    fake = SimpleNamespace(all_gather=all_gather, all_reduce=all_reduce, ReduceOp=torch_dist.ReduceOp)
    monkeypatch.setattr(distributed, "dist", fake)
    for module in (distributed, clip_module, siglip_module, sail_module):
        monkeypatch.setattr(module, "world", lambda: (rank, 2))
    return calls


def _both(x, rank):
    return torch.cat([x, OTHER] if rank == 0 else [OTHER, x])  # (2N, D) in rank order


@pytest.mark.parametrize("rank", [0, 1])
def test_gather_with_grad_by_hand(monkeypatch, rank):
    calls = _fake_world(monkeypatch, rank)
    x = torch.tensor([[0.0, 0.0, 2.0], [3.0, 4.0, 5.0]], requires_grad=True)
    out = distributed.gather(x)  # with_grad is the default
    assert torch.equal(out, _both(x.detach(), rank))
    w = torch.arange(12.0).view(4, 3)
    (out * w).sum().backward()
    assert torch.equal(x.grad, (w + OTHER_GRAD)[rank * N:(rank + 1) * N])  # summed, this rank's rows
    assert calls == ["all_gather", "all_reduce"]


@pytest.mark.parametrize("rank", [0, 1])
def test_gather_without_grad_keeps_only_the_local_slot(monkeypatch, rank):
    calls = _fake_world(monkeypatch, rank)
    x = torch.tensor([[0.0, 0.0, 2.0], [3.0, 4.0, 5.0]], requires_grad=True)
    out = distributed.gather(x, with_grad=False)
    assert torch.equal(out, _both(x.detach(), rank))
    w = torch.arange(12.0).view(4, 3)
    (out * w).sum().backward()
    assert torch.equal(x.grad, w[rank * N:(rank + 1) * N])  # other ranks' losses send nothing
    assert calls == ["all_gather"]


def test_concat_all_gather_has_no_gradient(monkeypatch):
    _fake_world(monkeypatch, 1)
    x = torch.tensor([[0.0, 0.0, 2.0], [3.0, 4.0, 5.0]], requires_grad=True)
    out = distributed.concat_all_gather(x)
    assert torch.equal(out, _both(x.detach(), 1)) and not out.requires_grad


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


def _features():
    img = F.normalize(torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]), dim=-1)
    txt = F.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    return img, txt


def _ce(logits, labels):
    return -logits.log_softmax(-1)[torch.arange(len(labels)), labels].mean()


@pytest.mark.parametrize("loss_fn", [ClipLoss(ClipConfig(local_loss=True)),
                                     LightClipLoss(LightClipConfig(local_loss=True, eps_max=0.0))])
def test_local_loss_scores_this_ranks_rows_against_all_columns(monkeypatch, loss_fn):
    calls = _fake_world(monkeypatch, 1)
    img, txt = _features()
    img.requires_grad_(True)
    s = 2.0
    out = loss_fn(img, txt, torch.tensor(math.log(s)))["contrastive_loss"]
    labels = torch.tensor([2, 3])  # rank 1: positives at columns 2 and 3
    i2t = s * img.detach() @ _both(txt, 1).T  # (2, 4)
    t2i = s * txt @ _both(img.detach(), 1).T
    assert out.item() == pytest.approx(((_ce(i2t, labels) + _ce(t2i, labels)) / 2).item(), abs=1e-6)
    out.backward()
    assert "all_reduce" in calls  # gathered with gradient by default


@pytest.mark.parametrize("rank", [0, 1])
def test_siglip_positives_are_this_ranks_block(monkeypatch, rank):
    _fake_world(monkeypatch, rank)
    img, txt = _features()
    s, b = 2.0, -1.0
    out = SigLipLoss()(img, txt, torch.tensor(math.log(s)), torch.tensor(b))["contrastive_loss"]
    logits = s * img @ _both(txt, rank).T + b  # (2, 4)
    signs = -torch.ones(2, 4)
    signs[[0, 1], [2 * rank, 2 * rank + 1]] = 1.0
    expected = -F.logsigmoid(signs * logits).sum() / 2
    assert out.item() == pytest.approx(expected.item(), abs=1e-6)
    assert SigLipLoss().positive_mask(2, 4, 2 * rank, {}).dtype == torch.bool


def test_sail_places_a_local_mask_at_this_ranks_columns(monkeypatch):
    _fake_world(monkeypatch, 1)
    local = torch.tensor([[1, 0], [1, 1]])
    mask = SailLoss().positive_mask(2, 4, 2, {"positive_mask": local})
    assert torch.equal(mask, torch.tensor([[False, False, True, False], [False, False, True, True]]))
    grouped = SailLoss().positive_mask(1, 4, 2, {})  # 2 captions per image on each rank
    assert torch.equal(grouped, torch.tensor([[False, False, True, True]]))


def test_clip_without_gather_grad_sends_nothing_back(monkeypatch):
    calls = _fake_world(monkeypatch, 1)
    img, txt = _features()
    img.requires_grad_(True)
    ClipLoss(ClipConfig(gather_with_grad=False))(img, txt, torch.tensor(0.0))["contrastive_loss"].backward()
    assert calls == ["all_gather", "all_gather"]  # no all-reduce of the gradient
