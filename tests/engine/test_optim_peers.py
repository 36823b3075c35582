"""vlkit's optimizers against their peers in timm.

Lion is timm's (``timm.optim.Lion``) behind vlkit's argument checks: the class is a subclass and
steps exactly as timm's does. Muon is vlkit's own (the reason, measured, is in the docstring of
``vlkit.engine.optim``): its step is compared with ``timm.optim.Muon`` at the same settings
(Nesterov, Jordan's original coefficients, the 0.2 sqrt(max(out, in)) scale), which runs
Newton-Schulz in bf16, hence the tolerance. Also Muon's routing: which tensors get a matrix
update and which step as AdamW.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import timm.optim
from vlkit.engine import optim as voptim
from vlkit.engine.optim import Lion, Muon, OptimConfig, build_optimizer


def test_lion_is_timms_and_steps_exactly_as_timm():
    assert issubclass(Lion, timm.optim.Lion) and Lion.__module__ == "vlkit.engine.optim"
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 4, generator=g)
    ours, theirs = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    a = Lion([ours], lr=0.1, betas=(0.8, 0.95), weight_decay=0.3)
    b = timm.optim.Lion([theirs], lr=0.1, betas=(0.8, 0.95), weight_decay=0.3)
    for _ in range(3):
        grad = torch.randn(3, 4, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    assert torch.equal(ours.detach(), theirs.detach())
    assert torch.equal(a.state[ours]["exp_avg"], b.state[theirs]["exp_avg"])
    assert not torch.equal(ours.detach(), w0)


def test_build_optimizer_lion_passes_its_settings_to_timm():
    opt = build_optimizer(nn.Linear(3, 2), OptimConfig(name="lion", lr=3e-4, betas=(0.95, 0.98)))
    assert isinstance(opt, timm.optim.Lion)
    decay = next(g for g in opt.param_groups if g["group"] == "decay")
    assert (decay["lr"], decay["betas"], decay["weight_decay"]) == (3e-4, (0.95, 0.98), 1.0)
    assert not decay.get("caution") and not decay.get("corrected_weight_decay")  # plain Lion (older timm lacks the keys)


def test_lion_is_not_imported_until_asked_for():
    assert voptim.__getattr__("Lion") is Lion
    with pytest.raises(AttributeError, match="no attribute 'Lamb'"):
        voptim.__getattr__("Lamb")


@pytest.mark.skipif(not hasattr(timm.optim, "Muon"), reason="this timm has no Muon")
@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 2, 3, 3)])  # tall, wide, a conv filter
def test_muon_steps_as_timm_muon_with_the_same_settings(shape):
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(shape, generator=g)
    ours, theirs = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    lr, wd, mu = 0.05, 0.1, 0.9
    a = Muon([{"params": [ours], "muon": True}], lr=lr, momentum=mu, weight_decay=wd)
    b = timm.optim.Muon([{"params": [theirs], "use_muon": True}], lr=lr, momentum=mu, weight_decay=wd,
                        nesterov=True, ns_coefficients="original", adjust_lr_fn="match_rms_adamw")
    for _ in range(2):
        grad = torch.randn(shape, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
        moved, peer_moved = ours.detach() - w0, theirs.detach() - w0
        # timm's Newton-Schulz is in bf16 (8 bits of mantissa): the steps agree to about 1%
        assert (moved - peer_moved).norm() < 0.03 * peer_moved.norm()
    assert torch.allclose(a.state[ours]["momentum_buffer"], b.state[theirs]["momentum_buffer"])


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)  # (8, 3, 3, 3): Muon, as an (8, 27) matrix
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8, bias=False)  # (8, 1, 3, 3): AdamW
        self.tokens = nn.Parameter(torch.zeros(1, 5, 8))  # (1, 5, 8), decayed: AdamW
        self.proj = nn.Linear(8, 4, bias=False)  # (4, 8): Muon
        self.embed = nn.Embedding(10, 8)  # a table: AdamW
        self.norm = nn.LayerNorm(8)  # no decay: AdamW


def test_muon_routes_matrices_to_muon_and_the_rest_to_adamw():
    opt = build_optimizer(Mixed(), OptimConfig(name="muon"))
    routed = {g["group"]: (g["muon"], sorted(g["param_names"])) for g in opt.param_groups}
    assert routed == {
        "muon": (True, ["conv.weight", "proj.weight"]),
        "decay": (False, ["depthwise.weight", "embed.weight", "tokens"]),
        "no_decay": (False, ["conv.bias", "norm.bias", "norm.weight"]),
    }


@pytest.mark.skipif(not hasattr(timm.optim, "Muon"), reason="this timm has no Muon")
def test_muon_routing_agrees_with_timms_shape_rule_on_the_leading_sizes():
    from timm.optim.muon import _is_suitable_for_muon

    for shape in [(8, 1, 3, 3), (1, 5, 8), (8, 3, 3, 3), (4, 8)]:
        assert voptim._muon_shaped(torch.zeros(shape)) == _is_suitable_for_muon(torch.zeros(shape))
