"""Every optimizer as the engine builds it (``build_optimizer``), checked step by step by hand,
and every weight-decay grouping rule.

``test_optim.py`` checks Lion and Muon constructed directly and AdamW's decay with zero
gradients. A factory that dropped a setting (momentum, eps, betas, a group's weight decay) or
a changed update rule would pass those. Here each optimizer comes out of ``build_optimizer`` with
its defaults and takes two steps with nonzero gradients, and the parameters are compared with
the update written out in float64 from the papers' formulas:

- AdamW (Loshchilov & Hutter, arXiv 1711.05101): m, v with bias correction, decoupled decay
  ``w (1 - lr wd)``; defaults betas (0.9, 0.98), eps 1e-6 (open_clip's CLIP recipe).
- SGD (torch / Dassl): ``d = g + wd w``; ``buf = d`` then ``mu buf + d``; ``w -= lr buf``;
  momentum 0.9.
- Lion (arXiv 2302.06675): ``w (1 - lr wd) - lr sign(b1 m + (1 - b1) g)``, ``m = b2 m + (1 - b2) g``.
- Muon: Newton-Schulz with Jordan's quintic (3.4445, -4.7750, 2.0315) acts on each singular value
  s as ``a s + b s^3 + c s^5`` after scaling by the Frobenius norm.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlkit.engine.optim import Muon, OptimConfig, build_optimizer, orthogonalize


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))


class Pair(nn.Module):
    """One matrix (weight decay) and one vector (no weight decay)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
        self.bias = nn.Parameter(torch.tensor([0.25, -1.5]))


# gradients per step; the 1e-6 entries make AdamW's eps matter, the sign flips make the betas matter
GRADS = [
    {"weight": [[0.5, -1e-6], [2.0, 0.1]], "bias": [1e-6, -0.3]},
    {"weight": [[-1.5, 2e-6], [0.5, 0.1]], "bias": [-3e-6, 0.9]},
]


# Lion: sign(c) follows the gradient at step 1, so only step 2 can show the betas. Entries with
# |g1| / |g2| of 5 and 20 against the sign of g2: 0.9 * 0.01 g1 + 0.1 g2 takes g2's sign at 5 and
# g1's (the momentum's) at 20.
LION_GRADS = [
    {"weight": [[2.0, 4.0], [-1.0, 0.3]], "bias": [1.0, -2.0]},
    {"weight": [[-0.4, -0.2], [0.5, 0.3]], "bias": [-0.15, 0.5]},
]


def _run(opt, model, steps=GRADS):
    for grads in steps:
        for name, p in model.named_parameters():
            p.grad = torch.tensor(grads[name])
        opt.step()


def _by_hand(model, update, steps=GRADS):
    """Apply ``update(w0, grads, decay)`` elementwise in float64; returns {name: tensor}."""
    out = {}
    for name, p in model.named_parameters():
        w0 = p.detach().reshape(-1).double().tolist()
        grads = [torch.tensor(g[name], dtype=torch.float64).reshape(-1).tolist() for g in steps]
        out[name] = torch.tensor([update(w, [g[i] for g in grads], name == "weight") for i, w in enumerate(w0)],
                                 dtype=torch.float64).reshape(p.shape)
    return out


def _assert_params(model, expected, atol=1e-6):
    for name, p in model.named_parameters():
        assert torch.allclose(p.detach().double(), expected[name], rtol=1e-5, atol=atol), (name, p, expected[name])


@pytest.mark.parametrize("fused", [None, False])
def test_adamw_two_steps_by_hand(fused):
    lr, wd, (b1, b2), eps = 0.1, 0.2, (0.9, 0.98), 1e-6
    model = Pair()

    def adamw(w, grads, decay):
        m = v = 0.0
        for t, g in enumerate(grads, start=1):
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            w *= 1 - lr * (wd if decay else 0.0)
            w -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        return w

    expected = _by_hand(model, adamw)
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=lr, weight_decay=wd, fused=fused))
    _run(opt, model)
    _assert_params(model, expected)


def test_sgd_two_steps_by_hand():
    lr, wd, mu = 0.1, 0.05, 0.9  # momentum: the sgd default
    model = Pair()

    def sgd(w, grads, decay):
        buf = None
        for g in grads:
            d = g + (wd * w if decay else 0.0)  # coupled L2, as torch.optim.SGD and Dassl
            buf = d if buf is None else mu * buf + d
            w -= lr * buf
        return w

    expected = _by_hand(model, sgd)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=lr, weight_decay=wd))
    _run(opt, model)
    _assert_params(model, expected)


def test_lion_two_steps_by_hand():
    lr, wd, (b1, b2) = 0.1, 0.5, (0.9, 0.99)  # betas: the lion default

    def sign(x):
        return (x > 0) - (x < 0)

    def lion(w, grads, decay):
        m = 0.0
        for g in grads:
            c = b1 * m + (1 - b1) * g
            w = w * (1 - lr * (wd if decay else 0.0)) - lr * sign(c)
            m = b2 * m + (1 - b2) * g
        return w

    def momentum(w, grads, decay):
        m = 0.0
        for g in grads:
            m = b2 * m + (1 - b2) * g
        return m

    model = Pair()
    expected = _by_hand(model, lion, LION_GRADS)
    expected_m = _by_hand(model, momentum, LION_GRADS)
    opt = build_optimizer(model, OptimConfig(name="lion", lr=lr, weight_decay=wd))
    _run(opt, model, LION_GRADS)
    _assert_params(model, expected)
    for name, p in model.named_parameters():
        assert torch.allclose(opt.state[p]["exp_avg"].double(), expected_m[name], atol=1e-7), name


def _quintic(s, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("shape", [(2, 3), (3, 2)])  # wide and tall
def test_orthogonalize_by_hand_through_the_singular_values(shape):
    """M = U diag(3, 4) V^T: Frobenius norm 5, so the iteration starts at singular values
    0.6 and 0.8 and ends at quintic^5(0.6), quintic^5(0.8) with the same U, V."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(shape[0], 2, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], 2, generator=g, dtype=torch.float64))
    m = u @ torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64)) @ v.T
    expected = u @ torch.diag(torch.tensor([_quintic(0.6), _quintic(0.8)], dtype=torch.float64)) @ v.T
    got = orthogonalize(m.float())
    assert got.dtype == torch.float32 and got.shape == shape
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert abs(_quintic(0.6) - _quintic(0.8)) > 0.05  # not simply U V^T: the check sees the coefficients


class MuonModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 4)  # weight: Muon; bias: AdamW, no decay
        self.embed = nn.Embedding(5, 3)  # a decayed table stepped as AdamW


def test_muon_through_build_optimizer_two_steps():
    lr, wd, mu = 0.02, 0.1, 0.95  # mu: the muon default
    model = MuonModel()
    peer = MuonModel()  # the AdamW part against torch.optim.AdamW (decoupled decay, same betas/eps)
    ref = torch.optim.AdamW([{"params": [peer.embed.weight], "weight_decay": wd},
                             {"params": [peer.proj.bias], "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    opt = build_optimizer(model, OptimConfig(name="muon", lr=lr, weight_decay=wd))
    assert isinstance(opt, Muon)
    g = torch.Generator().manual_seed(1)
    m = torch.zeros(4, 3)
    for _ in range(2):
        grads = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
        w0 = model.proj.weight.detach().clone()
        for (n, p), q in zip(model.named_parameters(), peer.parameters()):
            p.grad, q.grad = grads[n].clone(), grads[n].clone()
        opt.step()
        ref.step()
        gw = grads["proj.weight"]
        m = mu * m + (1 - mu) * gw
        nesterov = (1 - mu) * gw + mu * m
        expected = w0 * (1 - lr * wd) - lr * 0.2 * math.sqrt(4) * orthogonalize(nesterov)
        assert torch.allclose(model.proj.weight.detach(), expected, atol=1e-6)
    assert torch.allclose(model.embed.weight, peer.embed.weight, atol=1e-6)
    assert torch.allclose(model.proj.bias, peer.proj.bias, atol=1e-6)


# -- which parameters get weight decay ---------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(4, 2))  # excluded by its last name component
        self.pos_embed_proj = nn.Linear(2, 2, bias=False)  # shares a prefix only: decayed
        self.proj = nn.Linear(2, 2)  # excluded as a module ("enc.proj" and everything under it)
        self.proj2 = nn.Linear(2, 2, bias=False)  # shares a prefix only: decayed
        self.reproj = nn.Linear(2, 2, bias=False)  # shares a suffix only: decayed


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = Encoder()
        self.head = nn.Linear(2, 3)
        self.temperature = nn.Module()
        self.temperature.logit_scale = nn.Parameter(torch.zeros(1, 1))  # 2-D, excluded by its name
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"pos_embed"}


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "muon"])
def test_decay_groups_follow_the_rules(name):
    model = Outer()
    opt = build_optimizer(model, OptimConfig(name=name, weight_decay=0.3), no_weight_decay=["enc.proj"])
    decayed = {n for g in opt.param_groups if g["weight_decay"] > 0 for n in g["param_names"]}
    not_decayed = {n for g in opt.param_groups if g["weight_decay"] == 0 for n in g["param_names"]}
    assert decayed == {"enc.pos_embed_proj.weight", "enc.proj2.weight", "enc.reproj.weight", "head.weight"}
    assert not_decayed == {"enc.pos_embed", "enc.proj.weight", "enc.proj.bias", "head.bias",
                           "temperature.logit_scale"}
    assert all(g["weight_decay"] == 0.3 for g in opt.param_groups if g["weight_decay"] > 0)
    # every trainable parameter exactly once, frozen ones never
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == 9
    assert not {id(p) for p in model.frozen.parameters()} & {id(p) for p in params}


def test_dual_encoder_decays_matrices_but_not_positions_norms_or_temperature():
    from vlkit import models

    model = models.load("preset:tiny-clip").unfreeze("all")
    opt = build_optimizer(model, OptimConfig(name="adamw"))
    groups = {g["group"]: set(g["param_names"]) for g in opt.param_groups}
    shapes = {n: p.ndim for n, p in model.named_parameters()}
    positions = {"visual.model.positional_embedding", "text.positional_embedding"}
    assert groups["no_decay"] == {n for n, d in shapes.items() if d < 2} | positions
    assert groups["decay"] == {n for n, d in shapes.items() if d >= 2} - positions
    assert {"text.token_embedding.weight", "visual.model.conv1.weight", "text.text_projection"} <= groups["decay"]
    assert {"logit_scale", "visual.model.class_embedding"} <= groups["no_decay"]
