"""LR schedules: values at warm-up end, midpoint and end; resume round trip; errors."""

import io
import math

import pytest
import torch
from torch import nn

from vlkit.engine.schedule import ScheduleConfig, build_scheduler
from vlkit.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))


def make_optimizer(*lrs):
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def run(sched, opt, steps):
    """Take ``steps`` optimizer+schedule steps; return the lr of group 0 at each step."""
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_warmup_cosine_values():
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, total_steps=110, min_lr=0.1)
    opt = make_optimizer(1.0)
    lrs = run(build_scheduler(opt, cfg), opt, 112)
    assert lrs[0] == pytest.approx(0.1)  # (0 + 1) / 10 of the lr
    assert lrs[9] == pytest.approx(1.0)  # last warm-up step reaches the full lr
    assert lrs[10] == pytest.approx(1.0)  # warm-up end: cosine starts at the top
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # midpoint of the cosine: halfway
    assert lrs[109] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert lrs[110] == pytest.approx(0.1) and lrs[111] == pytest.approx(0.1)  # end: min_lr
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # never rises after warm-up


def test_warmup_start_factor_and_constant():
    opt = make_optimizer(2.0)
    cfg = ScheduleConfig(name="cosine", warmup_steps=4, total_steps=8, warmup_start_factor=0.5)
    assert build_scheduler(opt, cfg).lr_at(0) == [pytest.approx(2.0 * (0.5 + 0.5 / 4))]
    opt = make_optimizer(2.0)
    lrs = run(build_scheduler(opt, ScheduleConfig(name="constant", warmup_steps=4)), opt, 8)
    assert lrs == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0])


def test_dassl_constant_warmup_then_cosine():
    # CoOp: 10 epochs, lr 2e-3, one warm-up epoch at 1e-5; the cosine spans 10 epochs from
    # the end of warm-up (Dassl), so epoch e >= 1 has 2e-3 * (1 + cos(pi (e - 1) / 10)) / 2.
    cfg = ScheduleConfig(name="const_warmup_cosine", warmup_steps=1, total_steps=10)
    opt = make_optimizer(2e-3)
    lrs = run(build_scheduler(opt, cfg), opt, 10)
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[1] == pytest.approx(2e-3)
    assert lrs[6] == pytest.approx(1e-3)  # (6 - 1) / 10 = half the period
    assert lrs[9] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 0.8)))


def test_state_round_trip_resumes_exactly():
    cfg = ScheduleConfig(name="cosine", warmup_steps=3, total_steps=20, min_lr=1e-3)
    opt = make_optimizer(1.0, 0.1)
    sched = build_scheduler(opt, cfg)
    run(sched, opt, 7)
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)  # what a checkpoint holds
    buffer.seek(0)

    fresh_opt = make_optimizer(1.0, 0.1)
    fresh = build_scheduler(fresh_opt, cfg)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))  # engine loads so
    assert fresh.step_count == 7
    assert [g["lr"] for g in fresh_opt.param_groups] == [g["lr"] for g in opt.param_groups]
    for _ in range(5):
        opt.step(); sched.step()
        fresh_opt.step(); fresh.step()
        assert [g["lr"] for g in fresh_opt.param_groups] == [g["lr"] for g in opt.param_groups]
    assert opt.param_groups[1]["lr"] < opt.param_groups[0]["lr"]  # each group keeps its base lr


def test_errors():
    opt = make_optimizer(1.0)
    with pytest.raises(UserError, match="valid: const_warmup_cosine, constant, cosine"):
        build_scheduler(opt, ScheduleConfig(name="linear"))
    with pytest.raises(UserError, match="total_steps"):
        build_scheduler(opt, ScheduleConfig(name="cosine", warmup_steps=5, total_steps=5))
    state = build_scheduler(opt, ScheduleConfig(name="constant")).state_dict()
    other = build_scheduler(make_optimizer(1.0), ScheduleConfig(name="cosine", total_steps=9))
    with pytest.raises(UserError, match="resume with the same schedule"):
        other.load_state_dict(state)
