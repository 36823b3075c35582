"""Optimizers: Lion's and Muon's updates by hand, weight-decay groups, defaults, errors, grad
clipping."""

import pytest
import torch
from torch import nn

from vlkit import config as vconfig
from vlkit.engine.optim import (Lion, Muon, OptimConfig, build_optimizer, clip_grad_norm,
                                orthogonalize, resolve)
from vlkit.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))


def test_lion_two_steps_by_hand():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = Lion([w], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    # Step 1, g = [0.5, -0.1], m = 0: c = 0.1 g -> sign [+1, -1];
    # w = w * (1 - 0.1 * 0.01) - 0.1 * sign = [0.999 - 0.1, -1.998 + 0.1]; m = 0.01 g.
    w.grad = torch.tensor([0.5, -0.1])
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([0.899, -1.898]), atol=1e-6)
    assert torch.allclose(opt.state[w]["exp_avg"], torch.tensor([0.005, -0.001]), atol=1e-7)
    # Step 2, g = [-0.01, 0.2]: c = 0.9 m + 0.1 g = [0.0035, 0.0191] -> sign [+1, +1] (the
    # first entry follows the momentum, not the gradient);
    # w = [0.899, -1.898] * 0.999 - 0.1; m = 0.99 m + 0.01 g = [0.00485, 0.00101].
    w.grad = torch.tensor([-0.01, 0.2])
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([0.798101, -1.996102]), atol=1e-6)
    assert torch.allclose(opt.state[w]["exp_avg"], torch.tensor([0.00485, 0.00101]), atol=1e-7)
    assert set(opt.state[w]) == {"exp_avg"}  # one state buffer


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.pos_embed = nn.Parameter(torch.ones(5, 4))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"pos_embed"}


def groups_by_label(opt):
    return {g["group"]: g for g in opt.param_groups}


def test_adamw_groups_exclude_1d_logit_scale_and_listed_names():
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    groups = groups_by_label(opt)
    assert groups["decay"]["param_names"] == ["proj.weight"]
    assert groups["decay"]["weight_decay"] == 0.1
    assert sorted(groups["no_decay"]["param_names"]) == [
        "logit_bias", "logit_scale", "norm.bias", "norm.weight", "pos_embed", "proj.bias"]
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert groups["decay"]["betas"] == (0.9, 0.98) and groups["decay"]["eps"] == 1e-6
    assert groups["decay"]["lr"] == 5e-4


def test_adamw_step_decays_only_the_decay_group():
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.1, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(model.proj.weight, before["proj.weight"] * (1 - 0.1 * 0.5))
    for name in ("logit_scale", "logit_bias", "pos_embed", "proj.bias", "norm.weight"):
        assert torch.equal(dict(model.named_parameters())[name], before[name]), name
    assert torch.equal(model.frozen.weight, before["frozen.weight"])


def test_adamw_is_fused_where_it_can_be_and_steps_as_the_per_op_version():
    models = {flag: Tiny() for flag in (None, False)}
    models[False].load_state_dict(models[None].state_dict())
    opts = {flag: build_optimizer(m, OptimConfig(name="adamw", lr=0.05, weight_decay=0.2, fused=flag))
            for flag, m in models.items()}
    assert opts[None].defaults["fused"] is True  # auto: every parameter is a float CPU tensor
    assert not opts[False].defaults["fused"]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in models[None].parameters()]
        for flag, m in models.items():
            for p, grad in zip(m.parameters(), grads):
                p.grad = grad.clone() if p.requires_grad else None
            opts[flag].step()
    for (name, a), b in zip(models[None].named_parameters(), models[False].parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name


def test_named_parameters_input_and_extra_exclusions():
    model = Tiny()
    opt = build_optimizer(model.named_parameters(), OptimConfig(name="sgd"),
                          no_weight_decay=["proj"])
    assert isinstance(opt, torch.optim.SGD)
    groups = groups_by_label(opt)
    assert groups["decay"]["param_names"] == ["pos_embed"]  # no model, so no no_weight_decay()
    assert groups["decay"]["weight_decay"] == 5e-4  # the sgd default
    assert "proj.weight" in groups["no_decay"]["param_names"]


def test_lion_defaults_and_config_from_yaml_like_mapping():
    cfg = vconfig.build(OptimConfig, {"name": "lion", "betas": [0.95, 0.98]})
    assert cfg.betas == (0.95, 0.98)
    filled = resolve(cfg)
    assert (filled.lr, filled.weight_decay) == (1e-4, 1.0)
    opt = build_optimizer(Tiny(), cfg)
    assert isinstance(opt, Lion) and opt.param_groups[0]["betas"] == (0.95, 0.98)


def test_errors_name_the_fix():
    with pytest.raises(UserError, match="valid: adamw, lion, muon, sgd"):
        build_optimizer(Tiny(), OptimConfig(name="adam"))
    with pytest.raises(UserError, match="lr"):
        build_optimizer(Tiny(), OptimConfig(lr=0.0))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameters"):
        build_optimizer(frozen)
    with pytest.raises(UserError, match="betas"):
        Lion([nn.Parameter(torch.ones(1))], betas=(1.2, 0.99))


def test_clip_grad_norm_returns_norm_and_clips():
    w = nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, 4.0])
    assert clip_grad_norm([w], None) == pytest.approx(5.0)
    assert torch.equal(w.grad, torch.tensor([3.0, 4.0]))  # no clipping without a limit
    assert clip_grad_norm([w], 1.0) == pytest.approx(5.0)  # the norm before clipping
    assert torch.allclose(w.grad, torch.tensor([0.6, 0.8]), atol=1e-5)
    assert clip_grad_norm(nn.Linear(2, 2), 1.0) == 0.0  # no gradients yet


def test_orthogonalize_gives_the_polar_factor_approximately():
    g = torch.Generator().manual_seed(0)
    for shape in [(6, 10), (10, 6)]:  # wide and tall
        m = torch.randn(*shape, generator=g)
        u, _, vh = torch.linalg.svd(m, full_matrices=False)
        o = orthogonalize(m)
        assert o.shape == m.shape
        sv = torch.linalg.svdvals(o)
        assert sv.min() > 0.5 and sv.max() < 1.3  # all singular values pulled towards 1
        # same singular vectors as U V^T: projecting onto them leaves a diagonal
        inner = u.T @ o @ vh.T
        assert torch.allclose(inner, torch.diag(torch.diagonal(inner)), atol=1e-4)


class Convy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.embed = nn.Embedding(5, 4)
        self.proj = nn.Linear(4, 4, bias=False)
        self.norm = nn.LayerNorm(4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))


def test_muon_steps_matrices_and_conv_filters_and_the_rest_as_adamw():
    model = Convy()
    opt = build_optimizer(model, OptimConfig(name="muon", lr=0.01, weight_decay=0.1))
    assert isinstance(opt, Muon)
    groups = groups_by_label(opt)
    assert groups["muon"]["param_names"] == ["conv.weight", "proj.weight"]  # no embedding table
    assert groups["decay"]["param_names"] == ["embed.weight"] and not groups["decay"]["muon"]
    assert set(groups["no_decay"]["param_names"]) == {"conv.bias", "norm.weight", "norm.bias",
                                                      "logit_scale"}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["muon"]["weight_decay"] == 0.1
    assert resolve(OptimConfig(name="muon")).momentum == 0.95
    assert resolve(OptimConfig(name="sgd")).momentum == 0.9


def test_muon_two_steps_by_its_formula_and_adamw_part_as_torch_adamw():
    torch.manual_seed(0)
    conv = nn.Parameter(torch.randn(3, 2, 3, 3))
    bias = nn.Parameter(torch.randn(3))
    twin = nn.Parameter(bias.detach().clone())
    lr, wd, mu = 0.01, 0.1, 0.95
    opt = Muon([{"params": [conv], "muon": True, "weight_decay": wd},
                {"params": [bias], "weight_decay": 0.0}],
               lr=lr, momentum=mu, betas=(0.9, 0.98), eps=1e-6)
    ref = torch.optim.AdamW([twin], lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    m = torch.zeros_like(conv)
    for _ in range(2):
        g, gb = torch.randn_like(conv), torch.randn_like(bias)
        conv.grad, bias.grad, twin.grad = g, gb, gb.clone()
        before = conv.detach().clone()
        opt.step()
        ref.step()
        m = mu * m + (1 - mu) * g
        u = ((1 - mu) * g + mu * m).reshape(3, 18)  # a conv filter as an (out, in*kh*kw) matrix
        expected = before * (1 - lr * wd) - lr * 0.2 * 18**0.5 * orthogonalize(u).view_as(conv)
        assert torch.allclose(conv.detach(), expected, atol=1e-6)
        assert torch.allclose(bias.detach(), twin.detach(), atol=1e-6)
    assert torch.allclose(opt.state[conv]["momentum_buffer"], m, atol=1e-6)
    # An exactly orthogonal (3, 18) matrix has RMS 1 / sqrt(18), so the scaled update has RMS
    # 0.2, the RMS of a typical AdamW update (Liu et al. 2025); Newton-Schulz's singular values
    # lie in about [0.7, 1.2], hence the band.
    rms = (orthogonalize(u) * 0.2 * 18**0.5).pow(2).mean().sqrt()
    assert 0.14 < rms < 0.24


def test_muon_trains_and_its_state_round_trips_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1)
    opt = build_optimizer(model, OptimConfig(name="muon", lr=0.05))
    first = None
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = build_optimizer(model, OptimConfig(name="muon", lr=0.05))
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert [g["muon"] for g in fresh.param_groups] == [g["muon"] for g in opt.param_groups]
    w = model[0].weight
    assert torch.equal(fresh.state[w]["momentum_buffer"], opt.state[w]["momentum_buffer"])


def test_muon_refuses_a_vector_in_a_muon_group():
    with pytest.raises(UserError, match="matrices and conv filters"):
        Muon([{"params": [nn.Parameter(torch.ones(3))], "muon": True}])
    with pytest.raises(UserError, match="momentum"):
        Muon([nn.Parameter(torch.ones(2, 2))], momentum=1.0)


@pytest.mark.parametrize("name", ["lion", "muon"])
def test_step_with_a_closure_returns_its_loss_and_steps(name):
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.01))

    def closure():
        opt.zero_grad()
        loss = model(torch.ones(4, 3)).pow(2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.item() > 0
    assert not torch.equal(model.weight.detach(), before)
