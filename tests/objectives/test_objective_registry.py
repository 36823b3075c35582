"""Every registered objective honours the contract; build() composes weighted terms."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlkit.errors import UserError
from vlkit.objectives import OBJECTIVES, ClipLoss, LightClipConfig, LightClipLoss, build, create


def batch(b=4, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(b, d, generator=g), dim=-1).requires_grad_()
    extra = dict(
        momentum_image_features=img.detach(), momentum_text_features=txt.detach(),
        image_tokens=torch.randn(b, 5, d, generator=g),
        text_tokens=torch.randn(b, 3, d, generator=g),
        text_mask=torch.ones(b, 3), progress=0.5,
    )
    return img, txt, extra


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_returns_finite_losses_with_gradient(name):
    cls = OBJECTIVES.get(name)
    options = {"embed_dim": 8, "queue_size": 16} if name == "albef_itc" else {}
    objective = create(name, options)
    img, txt, extra = batch()
    scale = torch.tensor(cls.init_logit_scale, requires_grad=True)
    bias = torch.tensor(-1.0, requires_grad=True)
    out = objective(img, txt, scale, bias, **extra)
    losses = {k: v for k, v in out.items() if k.endswith("_loss")}
    assert losses, f"{name} returned no *_loss key"
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0
    assert scale.grad is not None and scale.grad.item() != 0
    lo, hi = objective.logit_scale_range
    assert lo < cls.init_logit_scale < hi


def test_composite_sums_weighted_terms_and_keeps_each_key():
    img, txt, extra = batch(seed=1)
    scale = torch.tensor(math.log(1 / 0.07))
    combo = build([{"name": "clip", "weight": 1.0},
                   {"name": "lightclip", "weight": 0.5, "eps_max": 0.2}])
    out = combo(img, txt, scale, **extra)
    clip = ClipLoss()(img, txt, scale)["contrastive_loss"]
    light = LightClipLoss(LightClipConfig(eps_max=0.2))(img, txt, scale, **extra)
    assert out["clip.contrastive_loss"].item() == pytest.approx(clip.item(), abs=1e-6)
    assert out["lightclip.contrastive_loss_unweighted"].item() == pytest.approx(
        light["contrastive_loss"].item(), abs=1e-6)
    assert out["lightclip.token_loss"].item() == pytest.approx(
        0.5 * light["token_loss"].item(), abs=1e-6)
    expected = clip + 0.5 * (light["contrastive_loss"] + light["token_loss"])
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    weighted = [v for k, v in out.items() if k.endswith("_loss")]
    assert sum(weighted).item() == pytest.approx(out["loss"].item(), abs=1e-5)


def test_composite_exposes_clamp_range_and_requirements():
    combo = build([{"name": "clip"}, {"name": "albef_itc", "embed_dim": 4, "queue_size": 4}])
    assert combo.logit_scale_range == pytest.approx((math.log(2), math.log(100)))
    assert combo.requires == ("momentum_image_features", "momentum_text_features")
    assert "terms.albef_itc.image_queue" in combo.state_dict()


def test_build_errors_list_the_valid_choices():
    with pytest.raises(UserError, match="valid: albef_itc, clip, lightclip, sail, siglip"):
        build([{"name": "clp"}])
    with pytest.raises(UserError, match="valid keys: .*label_smoothing.*weight"):
        build([{"name": "clip", "temperature": 0.07}])
    with pytest.raises(UserError, match="listed twice"):
        build(["clip", "clip"])
    with pytest.raises(UserError, match="name"):
        build([{"weight": 1.0}])
    with pytest.raises(UserError, match="expected a number"):
        build([{"name": "clip", "label_smoothing": "lots"}])
