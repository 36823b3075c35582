"""Optimizer details the mutation run (docs/testing.md) found untested: the defaults of Lion and
Muon built directly (not through ``build_optimizer``), the bounds and messages of their
arguments, Muon's ``ns_steps``, the fused-AdamW eligibility rule, grouping edge cases and
``clip_grad_norm``'s norm type. Each update is written out by hand on a one- or two-entry case.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from test_optim_rules import _quintic  # quintic Newton-Schulz on one singular value
from vlkit.engine.optim import (Lion, Muon, OptimConfig, _fusable, build_optimizer, clip_grad_norm,
                                orthogonalize, param_groups, resolve)
from vlkit.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))


def test_lion_defaults_one_step_by_hand():
    # defaults lr 1e-4, betas (0.9, 0.99), no weight decay: w - 1e-4 sign(g); m = 0.01 g
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = Lion([w])
    w.grad = torch.tensor([0.5, -3.0])
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([1.0 - 1e-4, -2.0 + 1e-4]), rtol=0, atol=1e-7)
    assert torch.allclose(opt.state[w]["exp_avg"], torch.tensor([0.005, -0.03]))


def test_muon_defaults_one_step_by_hand():
    """Muon built directly: lr 1e-3, momentum 0.95, eps 1e-6, no weight decay, 5 NS steps.

    Matrix W = I, g = diag(3, 4): m = 0.05 g, u = 0.05 g + 0.95 m = 0.0975 g, whose singular
    values over its Frobenius norm are 0.6, 0.8; W <- W - lr * 0.2 sqrt(2) diag(q(0.6), q(0.8)).
    Vector b = 0, g = 1e-6: AdamW's first step is g / (|g| + eps) = 0.5, so b <- -lr * 0.5.
    """
    w = nn.Parameter(torch.eye(2))
    b = nn.Parameter(torch.zeros(1))
    opt = Muon([{"params": [w], "muon": True}, {"params": [b]}])
    w.grad = torch.diag(torch.tensor([3.0, 4.0]))
    b.grad = torch.tensor([1e-6])
    opt.step()
    step = 1e-3 * 0.2 * math.sqrt(2)
    expected = torch.diag(torch.tensor([1 - step * _quintic(0.6), 1 - step * _quintic(0.8)]))
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-7)
    assert b.item() == pytest.approx(-1e-3 * 0.5, rel=1e-4)


def test_muon_ns_steps_is_used():
    w = nn.Parameter(torch.zeros(2, 2))
    opt = Muon([{"params": [w], "muon": True}], lr=1.0, ns_steps=1)
    w.grad = torch.diag(torch.tensor([3.0, 4.0]))
    opt.step()
    expected = -0.2 * math.sqrt(2) * torch.diag(torch.tensor([_quintic(0.6, 1), _quintic(0.8, 1)]))
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert abs(_quintic(0.6, 1) - _quintic(0.6)) > 0.1  # one step is not five


@pytest.mark.parametrize("make", [Lion, Muon])
def test_argument_bounds_and_messages(make):
    p = [nn.Parameter(torch.ones(2, 2))]
    name = make.__name__
    make(p, betas=(0.0, 0.0))  # 0 is inside [0, 1)
    with pytest.raises(UserError, match=rf"^{name} lr must be > 0, got 0"):
        make(p, lr=0.0)
    for betas in [(0.9, 1.0), (1.5, 0.9)]:
        with pytest.raises(UserError, match=rf"^{name} betas .*must be in \[0, 1\), got"):
            make(p, betas=betas)
    if make is Lion:
        with pytest.raises(UserError, match=r"the paper uses \(0\.9, 0\.99\)$"):
            Lion(p, betas=(1.0, 0.9))
        with pytest.raises(UserError, match=r"^Lion weight_decay must be >= 0, got -0\.1$"):
            Lion(p, weight_decay=-0.1)
    else:
        Muon(p, momentum=0.0)  # plain (non-Nesterov-averaged) momentum is allowed


def test_muon_vector_message_names_the_fix():
    msg = "Muon steps matrices and conv filters only; put 1-D parameters in a group with muon=False"
    with pytest.raises(UserError, match=f"^{re.escape(msg)}$"):
        Muon([{"params": [nn.Parameter(torch.ones(3))], "muon": True}])


def test_orthogonalize_keeps_the_input_dtype():
    m = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
    out = orthogonalize(m)
    assert out.dtype == torch.float64
    assert torch.allclose(out, torch.diag(torch.tensor([_quintic(0.6), _quintic(0.8)], dtype=torch.float64)),
                          atol=1e-5)


def _fake(device: str, floating: bool = True):
    """What ``_fusable`` reads of a parameter: its device type and whether it is floating."""
    return SimpleNamespace(device=SimpleNamespace(type=device), is_floating_point=lambda: floating)


@pytest.mark.parametrize("devices, floating, fusable", [
    (["cpu"], True, True), (["cuda", "cuda"], True, True), (["cpu"], False, False),
    (["meta"], True, False), (["cpu", "cuda"], True, False),
])
def test_fused_adamw_only_for_floating_tensors_on_one_cpu_or_cuda_device(devices, floating, fusable):
    assert _fusable([{"params": [_fake(d, floating) for d in devices]}]) is fusable


def test_zero_weight_decay_is_allowed_and_a_negative_one_is_named():
    assert resolve(OptimConfig(weight_decay=0.0)).weight_decay == 0.0
    with pytest.raises(UserError, match=r"^optimizer weight_decay must be >= 0, got -1\.0$"):
        resolve(OptimConfig(weight_decay=-1.0))


def test_grouping_edge_cases():
    frozen_first = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 3, bias=False))
    frozen_first[0].requires_grad_(False)
    bias_2d = ("head.logit_bias", nn.Parameter(torch.zeros(1, 1)))
    groups = param_groups(list(frozen_first.named_parameters()) + [bias_2d], weight_decay=0.1)
    names = {g["group"]: g["param_names"] for g in groups}
    # a frozen parameter is skipped, not the end of the list; logit_bias is never decayed
    assert names == {"decay": ["1.weight"], "no_decay": ["head.logit_bias"]}
    only_matrices = param_groups([("w", nn.Parameter(torch.ones(2, 2)))], weight_decay=0.1)
    assert [g["group"] for g in only_matrices] == ["decay"]
    with pytest.raises(UserError, match=r"^no trainable parameters to optimize"):
        param_groups([("w", nn.Parameter(torch.ones(2, 2), requires_grad=False))], 0.1)


def test_muon_from_named_parameters_and_a_root_embedding():
    named = [("w", nn.Parameter(torch.ones(2, 2)))]
    opt = build_optimizer(named, OptimConfig(name="muon"))
    assert [g["group"] for g in opt.param_groups] == ["muon"]
    table = nn.Embedding(5, 3)  # the module itself: its parameter is named "weight"
    opt = build_optimizer(table, OptimConfig(name="muon"))
    assert [(g["group"], g["param_names"]) for g in opt.param_groups] == [("decay", ["weight"])]


def test_clip_grad_norm_uses_the_norm_type():
    w = nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, -4.0])
    assert clip_grad_norm([w], 3.5, norm_type=1.0) == pytest.approx(7.0)  # |3| + |-4|
    assert torch.allclose(w.grad, torch.tensor([1.5, -2.0]), atol=1e-5)  # scaled by 3.5 / 7
