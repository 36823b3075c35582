"""Tip-Adapter and Tip-Adapter-F by hand: the cache logits, the alpha/beta search, learnable keys.

"Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification" (arXiv 2207.09519;
gaopengcuhk/Tip-Adapter ``utils.search_hp``):

    logits = exp(logit_scale) f W^T + alpha * exp(-beta (1 - f F^T)) L

with F the cache keys, L the one-hot cache values. The search tries
beta_i = i (7 - 0.1) / 200 + 0.1 (i < 200) in the outer loop and
alpha_j = j (3 - 0.1) / 20 + 0.1 (j < 20) in the inner one and keeps the first pair that is
strictly better, so of equally good pairs the smallest beta, then the smallest alpha, wins.
The search cases below are built from unit vectors so that the winning pair follows in closed
form from those grids (derivations next to each case).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_adapt_formulas import NAMES, TEMPLATES, clip_weights  # the zero-shot weights by hand
from vlkit import adapt




def _views(model, v=3, n=8, seed=0):
    return torch.randn(v, n, model.embed_dim, generator=torch.Generator().manual_seed(seed)) * 2


def _hand_keys(views):
    """Mean over views of the raw features, then L2-normalised (Tip-Adapter's build_cache_model): (N, D)."""
    return F.normalize(sum(views) / len(views), dim=-1)


def _hand_logits(model, f_raw, keys, values, alpha, beta):
    f = F.normalize(f_raw, dim=-1)
    clip = model.logit_scale.exp() * f @ clip_weights(model, NAMES, TEMPLATES).T  # (B, C)
    cache = torch.exp(-beta * (1 - f @ keys.T)) @ values  # (B, N) @ (N, C)
    return clip + alpha * cache, clip


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_tip_logits_by_hand(tiny_model, name):
    views, labels = _views(tiny_model), torch.arange(8) % 4
    tip = adapt.build_method(name, tiny_model, NAMES, TEMPLATES)
    tip.prepare(views, labels)
    keys, values = _hand_keys(views), F.one_hot(labels, 4).float()
    with torch.no_grad():
        tip.alpha.fill_(1.7)
        tip.beta.fill_(5.5)
        f = views[0, :5] + 0.3 * torch.randn(5, tiny_model.embed_dim, generator=torch.Generator().manual_seed(3))
        expected, clip = _hand_logits(tiny_model, f, keys, values, alpha=1.7, beta=5.5)
        got = tip.logits({"image_embeds": f})
    assert (expected - clip).abs().max() > 0.1  # the cache term is not negligible here
    assert torch.allclose(got, expected, atol=1e-4)


def _search_case(model, keys, key_labels, margin):
    """Two classes; the validation feature is e0 with label 0. Text weights make the zero-shot
    logits (0, margin): class 1 wins unless the cache term outweighs ``margin``."""
    d, s = model.embed_dim, float(model.logit_scale.exp())
    e = torch.eye(d)
    tip = adapt.build_method("tip_adapter", model, ["zero", "one"], None)
    tip.prepare(keys[None], torch.tensor(key_labels))  # one view: the keys are the given unit vectors
    c = margin / s
    tip.text_weights = torch.stack([e[2], c * e[0] + math.sqrt(1 - c * c) * e[3]])  # f.W = (0, c)
    return tip, e[0][None], torch.tensor([0])


def test_search_grid_beta_threshold(tiny_model):
    """Keys e0 (class 0), e1 (class 1); f = e0 has affinity 1 and 0 to them, so the cache logits
    are (1, exp(-beta)) and label 0 wins iff alpha (1 - exp(-beta)) > margin. The largest alpha
    is 19 * 2.9 / 20 + 0.1 = 2.855; with margin 2.5234:
      beta_59 = 59 * 6.9 / 200 + 0.1 = 2.1355: 2.855 (1 - e^-2.1355) = 2.5177 < margin (no alpha fits)
      beta_60 = 2.17:                          2.855 (1 - e^-2.17)   = 2.5290 > margin, only alpha 2.855
    so the search returns beta 2.17, alpha 2.855 and validation accuracy 1."""
    e = torch.eye(tiny_model.embed_dim)
    tip, f, labels = _search_case(tiny_model, torch.stack([e[0], e[1]]), [0, 1], margin=2.5234)
    assert tip.config.search_scale == [7.0, 3.0] and tip.config.search_step == [200, 20]
    chosen = tip.tune(f, labels)
    assert chosen["val_acc"] == 1.0
    assert chosen["beta"] == pytest.approx(2.17, rel=1e-6) and chosen["alpha"] == pytest.approx(2.855, rel=1e-6)
    assert float(tip.beta) == pytest.approx(2.17, rel=1e-6) and float(tip.alpha) == pytest.approx(2.855, rel=1e-6)


def test_search_grid_alpha_threshold_and_first_beta(tiny_model):
    """Only a class-0 key e0: the cache logits of f = e0 are (1, 0) for every beta, so label 0
    wins iff alpha > margin = 1.33. alpha_8 = 8 * 2.9 / 20 + 0.1 = 1.26 < 1.33 < alpha_9 = 1.405;
    every beta ties, and the reference keeps the first: beta_0 = 0.1."""
    e = torch.eye(tiny_model.embed_dim)
    tip, f, labels = _search_case(tiny_model, e[:1], [0], margin=1.33)
    chosen = tip.tune(f, labels)
    assert chosen["val_acc"] == 1.0
    assert chosen["alpha"] == pytest.approx(1.405, rel=1e-6) and chosen["beta"] == pytest.approx(0.1, rel=1e-6)
    # the chosen pair is what the method then predicts with
    with torch.no_grad():
        assert int(tip.logits({"image_embeds": f}).argmax()) == 0


def test_tip_adapter_f_keys_start_at_the_cache_and_train(tiny_model):
    views, labels = _views(tiny_model), torch.arange(8) % 4
    tip_f = adapt.build_method("tip_adapter_f", tiny_model, NAMES, TEMPLATES)
    tip_f.prepare(views, labels)
    keys = _hand_keys(views)
    assert isinstance(tip_f.cache_keys, nn.Parameter) and tip_f.cache_keys.requires_grad
    assert torch.allclose(tip_f.cache_keys, keys, atol=1e-6)
    assert any(p is tip_f.cache_keys for p in tip_f.trainable_parameters())
    assert not tip_f.cache_values.requires_grad  # the one-hot values stay fixed
    assert "cache_keys" in tip_f.state_dict()  # the learned keys are saved with the adapter

    batch = {"image_embeds": views[1], "labels": labels}
    before = tip_f(batch)["ce_loss"]
    before.backward()
    assert tip_f.cache_keys.grad is not None and tip_f.cache_keys.grad.abs().sum() > 0
    with torch.no_grad():
        tip_f.cache_keys.sub_(1.0 * tip_f.cache_keys.grad)
        assert tip_f(batch)["ce_loss"] < before  # a step on the keys lowers the loss

    plain = adapt.build_method("tip_adapter", tiny_model, NAMES, TEMPLATES)
    plain.prepare(views, labels)
    assert not plain.trainable_parameters() and not plain.cache_keys.requires_grad  # training-free
