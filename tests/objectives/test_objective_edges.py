"""Objective details the mutation run (docs/testing.md) found untested, each by hand on a tiny case:
LightCLIP's soft targets, token similarity and schedule edges; ALBEF's config checks, alpha ramp
and dtype; the composite's pass-through, bias and entry checks; the text bank with smoothing and
masked captions; the registry names; every error message a user sees, in full."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from vlkit.errors import UserError
from vlkit.objectives import (AlbefItcConfig, AlbefItcLoss, CompositeObjective, LightClipConfig, LightClipLoss,
                              MomentumEncoder, SailLoss, SigLipLoss, build, create, token_similarity)
from vlkit.objectives.base import OBJECTIVES, clamp_logit_scale
from vlkit.objectives.clip import bank_cross_entropy
from vlkit.objectives.lightclip import soft_negative_targets


def _raises(exc, msg):
    return pytest.raises(exc, match=f"^{re.escape(msg)}$")


# -- LightCLIP -----------------------------------------------------------------------------------
def test_soft_negative_targets_by_hand():
    got = soft_negative_targets(2, 4, first=1, eps=0.3)  # eps / 3 = 0.1 on each negative
    assert torch.allclose(got, torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]]))
    assert torch.equal(soft_negative_targets(1, 1, first=0, eps=0.3), torch.tensor([[1.0]]))  # no negative


def test_token_similarity_by_hand_unnormalised_without_mask():
    # 1 image of 2 patches, 2 texts of 3 words (T != B_txt); tokens are normalised inside
    image = torch.tensor([[[3.0, 0.0], [0.0, 2.0]]])  # patches e1, e2
    text = torch.tensor([[[5.0, 0.0], [1.0, 1.0], [0.0, -4.0]],  # best cos: 1, 1/sqrt2, 0
                         [[0.0, 7.0], [-1.0, 0.0], [-2.0, 0.0]]])  # best cos: 1, 0, 0
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[(1 + r + 0) / 3, 1 / 3]])
    assert torch.allclose(token_similarity(image, text), expected, atol=1e-6)
    two = torch.cat([image, image.flip(1)])  # 2 images, in blocks of one image (chunk 1)
    assert torch.allclose(token_similarity(two, text, chunk=1), torch.cat([expected, expected]), atol=1e-6)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)  # a float64 mask
    masked = token_similarity(image, text, mask)
    assert masked.dtype == torch.float32  # the tokens' dtype, not the mask's
    assert torch.allclose(masked, torch.tensor([[(1 + r) / 2, 1.0]]), atol=1e-6)


def test_lightclip_schedule_edges_and_requirements():
    assert LightClipLoss(LightClipConfig(eps_max=0.2, ramp_end=4.0)).eps(None) == pytest.approx(0.05)  # progress 1
    assert LightClipLoss(LightClipConfig(eps_max=0.2, ramp_end=0.0)).eps(0.0) == pytest.approx(0.2)  # no ramp
    assert LightClipLoss(LightClipConfig(token_weight=0.5)).requires == ("image_tokens", "text_tokens")
    assert LightClipLoss(LightClipConfig(token_weight=0.0)).requires == ()
    img = nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    out = LightClipLoss()(img, img, torch.tensor(0.0), image_tokens=img[:, None, :])  # no text tokens
    assert set(out) == {"contrastive_loss"}


# -- ALBEF ---------------------------------------------------------------------------------------
def test_albef_config_checks_and_messages():
    msg = "albef_itc needs queue_size >= 0 and embed_dim > 0; fix the config"
    for cfg in (AlbefItcConfig(queue_size=-1), AlbefItcConfig(embed_dim=0)):
        with _raises(UserError, msg):
            AlbefItcLoss(cfg)
    AlbefItcLoss(AlbefItcConfig(embed_dim=1, queue_size=0))  # the smallest valid config
    x = torch.ones(2, 4)
    with _raises(UserError, "albef_itc queue width is 8 but features are 4-d; "
                            "set the objective's embed_dim to the model's"):
        AlbefItcLoss(AlbefItcConfig(embed_dim=8))(x, x, torch.tensor(1.0), momentum_image_features=x,
                                                 momentum_text_features=x)
    with _raises(UserError, "objective 'albef_itc' needs momentum_image_features, momentum_text_features "
                            "in its inputs; use a training task that provides them (e.g. a momentum "
                            "model for albef_itc)"):
        AlbefItcLoss(AlbefItcConfig(embed_dim=4))(x, x, torch.tensor(1.0))


def test_albef_alpha_follows_progress_and_a_zero_ramp_is_full_alpha():
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=2, queue_size=0, alpha=0.4, alpha_ramp=0.0))
    assert loss_fn.alpha(0.0) == 0.4
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    img_m = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # momentum features that disagree with the labels
    cfg = AlbefItcConfig(embed_dim=2, queue_size=0, alpha=0.4, alpha_ramp=0.5)
    kw = dict(momentum_image_features=img_m, momentum_text_features=img_m)
    at_start = AlbefItcLoss(cfg).eval()(img, img, torch.tensor(math.log(2.0)), progress=0.0, **kw)
    # progress 0: alpha 0, hard labels; s = 2, logits 2 * I against [T_m]: rows [0, 2], [2, 0]
    hard = math.log(1 + math.exp(2.0))  # -log softmax([0, 2])[0]
    assert at_start["contrastive_loss"].item() == pytest.approx(hard, abs=1e-6)


def test_albef_keeps_the_features_dtype():
    x = torch.nn.functional.normalize(torch.randn(2, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=4, queue_size=4))
    loss_fn.enqueue(x, x)  # a float32 queue
    xb = x.to(torch.bfloat16)
    out = loss_fn(xb, xb, torch.tensor(1.0), momentum_image_features=xb, momentum_text_features=xb)
    assert out["contrastive_loss"].dtype == torch.bfloat16


def test_momentum_encoder_default_and_bounds():
    model = nn.Linear(1, 1, bias=False)
    ema = MomentumEncoder(model)  # ALBEF's 0.995
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.005)
    MomentumEncoder(model, momentum=0.0)  # a copy each step
    MomentumEncoder(model, momentum=1.0)  # a frozen copy


# -- composite, registry, errors -----------------------------------------------------------------
class _Terms(nn.Module):
    """An objective returning two losses around a non-loss output."""

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        return {"a_loss": torch.tensor(2.0), "stat": torch.tensor(7.0), "b_loss": torch.tensor(3.0)}


def test_composite_passes_other_outputs_through_and_sums_every_loss():
    out = CompositeObjective([("t", 0.5, _Terms())])(None, None, None)
    assert {k: v.item() for k, v in out.items()} == {
        "t.a_loss": 1.0, "t.a_loss_unweighted": 2.0, "t.stat": 7.0,
        "t.b_loss": 1.5, "t.b_loss_unweighted": 3.0, "loss": 2.5}
    with _raises(UserError, "no objectives given; list at least one, e.g. [{name: clip}]"):
        CompositeObjective([])


def test_composite_passes_the_logit_bias():
    img = nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    scale, bias = torch.tensor(1.0), torch.tensor(-2.0)
    alone = SigLipLoss()(img, img, scale, bias)["contrastive_loss"]
    assert build("siglip")(img, img, scale, bias)["loss"].item() == pytest.approx(alone.item())


def test_build_entries_default_weight_and_messages():
    assert build("clip").weights == {"clip": 1.0}
    assert build({"name": "clip"}).weights == {"clip": 1.0}
    with _raises(UserError, "objective entry 1 must be a mapping with a 'name' (valid: albef_itc, clip, "
                            "lightclip, sail, siglip), e.g. {name: clip, weight: 1.0}"):
        build(["clip", 3])
    with _raises(UserError, "unknown key 'foo' for objective 'clip'; valid keys: gather_with_grad, "
                            "label_smoothing, local_loss, text_negatives, name, weight"):
        build([{"name": "clip", "foo": 1}])
    with _raises(UserError, "objective 'clip': weight must be a number, got '2'"):
        build([{"name": "clip", "weight": "2"}])
    with _raises(UserError, "objectives.clip.local_loss: expected true or false, got 'maybe'"):
        create("clip", {"local_loss": "maybe"})


def test_registry_names_are_the_registered_ones():
    for name in OBJECTIVES.names():
        cls = OBJECTIVES.get(name)
        assert cls.registry_name == name and cls().name == name


def test_clamp_logit_scale_refuses_what_has_no_tensor_scale():
    assert clamp_logit_scale(nn.Linear(1, 1)) is False  # a module without logit_scale
    assert clamp_logit_scale(3.0) is False  # not a tensor


def test_sigmoid_losses_count_messages():
    x = torch.ones(2, 4)
    with _raises(UserError, "3 texts for 2 images: give the same number of captions per image "
                            "(grouped by image) or pass a positive_mask"):
        SailLoss()(x, torch.ones(3, 4), torch.tensor(1.0), torch.tensor(0.0))
    with _raises(UserError, "objective 'siglip' expects one text per image, got 3 texts for 2 images per "
                            "rank; use the 'sail' objective for several captions per image"):
        SigLipLoss()(x, torch.ones(3, 4), torch.tensor(1.0), torch.tensor(0.0))
    assert SailLoss().positive_mask(2, 4, 0, {}).dtype == torch.bool


# -- the text bank -------------------------------------------------------------------------------
def test_bank_cross_entropy_default_and_smoothing_over_allowed_columns():
    img = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # logits at s = 1: [1, 0, -1]
    target = torch.tensor([0])
    lse3 = math.log(math.e + 1 + 1 / math.e)
    assert bank_cross_entropy(img, bank, target, torch.tensor(1.0)).item() == pytest.approx(lse3 - 1)
    other = torch.tensor([[False, True, False]])  # caption 1 is the image's too: not a negative
    lse2 = math.log(math.e + 1 / math.e)
    nll, uniform = lse2 - 1, ((lse2 - 1) + (lse2 + 1)) / 2  # uniform over the 2 allowed columns
    got = bank_cross_entropy(img, bank, target, torch.tensor(1.0), other, label_smoothing=0.2)
    assert got.item() == pytest.approx(0.8 * nll + 0.2 * uniform, abs=1e-6)
