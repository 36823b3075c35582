"""Method details the mutation run (docs/testing.md) found untested, each checked by hand on the
tiny model: shapes and constants each method's docstring states, and the branches the formula
tests do not reach."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from test_adapt_formulas import NAMES, TEMPLATES, clip_weights, linears
from vlkit import adapt
from vlkit.errors import UserError


@pytest.mark.parametrize("reduction", [4, 2])
def test_clip_adapter_bottleneck_is_d_over_reduction_without_bias(tiny_model, reduction):
    # CLIP-Adapter (arXiv 2110.04544): W1 D -> D / reduction, W2 back to D, no bias, ReLU after each
    d = tiny_model.embed_dim
    method = adapt.build_method("clip_adapter", tiny_model, NAMES, TEMPLATES, {"reduction": reduction})
    first, second = linears(method.adapter)
    assert first.weight.shape == (d // reduction, d) and second.weight.shape == (d, d // reduction)
    assert first.bias is None and second.bias is None
    assert [type(m).__name__ for m in method.adapter] == ["Linear", "ReLU", "Linear", "ReLU"]


def test_clip_adapter_hidden_width_is_at_least_one(tiny_model):
    d = tiny_model.embed_dim
    method = adapt.build_method("clip_adapter", tiny_model, NAMES, TEMPLATES, {"reduction": d})
    assert linears(method.adapter)[0].weight.shape == (1, d)  # d // d = 1


def test_zeroshot_logits_by_hand_with_the_given_templates(tiny_model):
    f = torch.randn(3, tiny_model.embed_dim, generator=torch.Generator().manual_seed(0)) * 3
    method = adapt.build_method("zeroshot", tiny_model, NAMES, TEMPLATES)
    with torch.no_grad():
        expected = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ clip_weights(tiny_model, NAMES, TEMPLATES).T
        got = method.logits({"image_embeds": f})
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name, buffer", [("zeroshot", "text_weights"), ("clip_adapter", "text_weights"),
                                          ("kgcoop", "clip_text")])
def test_frozen_text_weights_stay_out_of_the_saved_state(tiny_model, name, buffer):
    # the hand-crafted weights are recomputed from the model; the adapter state holds what was learned
    method = adapt.build_method(name, tiny_model, NAMES, TEMPLATES)
    assert buffer in dict(method.named_buffers()) and buffer not in method.state_dict()


def test_kgcoop_uses_the_configured_weight(tiny_model):
    kg = adapt.build_method("kgcoop", tiny_model, NAMES, TEMPLATES, {"kg_weight": 2.0})
    with torch.no_grad():
        kg.context.ctx.add_(torch.randn(kg.context.ctx.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
        f = torch.randn(4, tiny_model.embed_dim, generator=torch.Generator().manual_seed(2))
        out = kg({"image_embeds": f, "labels": torch.tensor([0, 1, 2, 3])})
        _, text = kg.logits_and_text({"image_embeds": f})
        cos = F.cosine_similarity(text, clip_weights(tiny_model, NAMES, TEMPLATES), dim=-1)  # (n_cls,)
    assert out["kg_loss"].item() == pytest.approx(2.0 * (1 - cos.mean().item()), abs=1e-5)
    assert out["kg_loss"].item() > 1e-3


def test_zs_linear_probe_standardises_and_starts_at_zero_shot(tiny_model):
    method = adapt.build_method("zs_linear_probe", tiny_model, NAMES, TEMPLATES)
    g = torch.Generator().manual_seed(3)
    method.prepare(torch.randn(2, 6, tiny_model.embed_dim, generator=g), torch.arange(6) % 4)
    f = torch.randn(3, tiny_model.embed_dim, generator=g)
    with torch.no_grad():
        w = clip_weights(tiny_model, NAMES, TEMPLATES)
        zero_shot = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ w.T
        assert torch.allclose(method.logits({"image_embeds": f}), zero_shot, atol=1e-4)
        method.head.weight.normal_(generator=g)  # any head: logits = head((f - mean) / std)
        z = (F.normalize(f, dim=-1) - method.feat_mean) / method.feat_std
        assert torch.allclose(method.logits({"image_embeds": f}), z @ method.head.weight.T + method.head.bias,
                              atol=1e-4)
    assert float(method.feat_std.min()) < 0.5  # the statistics are not the identity


def test_zs_linear_probe_zeros_init_and_unknown_init(tiny_model):
    method = adapt.build_method("zs_linear_probe", tiny_model, NAMES, TEMPLATES, {"init": "zeros"})
    assert not method.head.weight.any() and not method.head.bias.any()
    msg = "unknown zs_linear_probe init 'zero' (did you mean 'zeros'?); valid: zeros, zeroshot"
    with pytest.raises(UserError, match=f"^{re.escape(msg)}$"):
        adapt.build_method("zs_linear_probe", tiny_model, NAMES, TEMPLATES, {"init": "zero"})


def test_maple_text_features_reach_the_deep_prompts_and_are_unit_rows(tiny_model):
    maple = adapt.build_method("maple", tiny_model, NAMES, TEMPLATES)
    with torch.no_grad():
        before = maple.text_features()
        assert torch.allclose(before.norm(dim=-1), torch.ones(len(NAMES)), atol=1e-5)  # (n_cls, D)
        maple.deep_text[0].add_(torch.randn(maple.deep_text[0].shape, generator=torch.Generator().manual_seed(4)))
        assert (maple.text_features() - before).abs().max() > 1e-3  # the deeper layers' prompts are used


def test_a_tip_adapter_without_cache_is_zero_shot(tiny_model):
    tip = adapt.build_method("tip_adapter", tiny_model, NAMES, TEMPLATES)
    assert tuple(tip.state_dict()["cache_keys"].shape) == (0, tiny_model.embed_dim)
    f = torch.randn(2, tiny_model.embed_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ clip_weights(tiny_model, NAMES, TEMPLATES).T
        assert torch.allclose(tip.logits({"image_embeds": f}), expected, atol=1e-5)


@pytest.mark.parametrize("name, epochs", [("kgcoop", 100), ("maple", 5), ("cocoop", 10),
                                          ("zs_linear_probe", 200), ("clip_adapter", 200)])
def test_paper_schedules(name, epochs):
    # KgCoOp 100 epochs, MaPLe 5, CoCoOp 10 (their papers / configs), CLIP-Adapter 200; the
    # zero-shot-initialised probe: vlkit's 200 (its docstring)
    assert adapt.get_method(name).paper_schedule(16) == {"epochs": epochs}


def test_coop_is_class_agnostic_unless_class_specific(tiny_model):
    assert adapt.build_method("coop", tiny_model, NAMES, TEMPLATES).is_class_agnostic()
    assert not adapt.build_method("coop_csc", tiny_model, NAMES, TEMPLATES).is_class_agnostic()
