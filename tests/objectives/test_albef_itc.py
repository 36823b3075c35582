"""ALBEF ITC: momentum-distilled targets, queues, temperature clamp, momentum encoder."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlkit.errors import UserError
from vlkit.objectives import AlbefItcConfig, AlbefItcLoss, ClipLoss, MomentumEncoder


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_alpha_zero_empty_queue_equals_clip_same_temperature():
    img, txt = unit(4, 8, seed=1), unit(4, 8, seed=2)
    logit_scale = torch.tensor(math.log(1 / 0.07))
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=8, queue_size=16, alpha=0.0))
    out = loss_fn(img, txt, logit_scale, momentum_image_features=img, momentum_text_features=txt)
    clip = ClipLoss()(img, txt, logit_scale)["contrastive_loss"]
    assert out["contrastive_loss"].item() == pytest.approx(clip.item(), abs=1e-6)
    assert int(loss_fn.queue_filled) == 4  # the momentum features went into the queue


def test_distilled_targets_against_queue_by_formula():
    d, alpha, s = 2, 0.4, 3.0
    img, txt = unit(2, d, seed=3), unit(2, d, seed=4)
    img_m, txt_m = unit(2, d, seed=5), unit(2, d, seed=6)
    q_img, q_txt = unit(1, d, seed=7), unit(1, d, seed=8)
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=d, queue_size=4, alpha=alpha, alpha_ramp=0.1))
    loss_fn.enqueue(q_img, q_txt)
    out = loss_fn(img, txt, torch.tensor(math.log(s)), progress=0.5,  # past the ramp: full alpha
                  momentum_image_features=img_m, momentum_text_features=txt_m)
    text_all, image_all = torch.cat([txt_m, q_txt]), torch.cat([img_m, q_img])  # (3, d) each
    one_hot = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])

    def direction(x, x_m, cols):
        target = alpha * torch.softmax(s * x_m @ cols.T, -1) + (1 - alpha) * one_hot
        return -(target * torch.log_softmax(s * x @ cols.T, -1)).sum(1).mean()

    expected = (direction(img, img_m, text_all) + direction(txt, txt_m, image_all)) / 2
    assert out["contrastive_loss"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_queue_wraps_around_and_keeps_last_rows_of_big_batch():
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=2, queue_size=5))
    a = torch.arange(6.0).view(3, 2)  # rows [0,1], [2,3], [4,5]
    b = 10 + torch.arange(6.0).view(3, 2)
    loss_fn.enqueue(a, -a)
    loss_fn.enqueue(b, -b)  # 3 rows at positions 3, 4, 0
    assert int(loss_fn.queue_ptr) == 1 and int(loss_fn.queue_filled) == 5
    expected = torch.stack([b[2], a[1], a[2], b[0], b[1]])
    assert torch.equal(loss_fn.image_queue, expected)
    assert torch.equal(loss_fn.text_queue, -expected)

    small = AlbefItcLoss(AlbefItcConfig(embed_dim=2, queue_size=2))
    small.enqueue(a, a)  # 3 rows into 2 slots: the last two survive
    assert torch.equal(small.image_queue, a[1:]) and int(small.queue_ptr) == 0


def test_eval_mode_leaves_queue_and_state_dict_holds_it():
    img, txt = unit(2, 4, seed=1), unit(2, 4, seed=2)
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=4, queue_size=8)).eval()
    loss_fn(img, txt, torch.tensor(2.0), momentum_image_features=img, momentum_text_features=txt)
    assert int(loss_fn.queue_filled) == 0
    keys = set(loss_fn.state_dict())
    assert {"image_queue", "text_queue", "queue_ptr", "queue_filled"} <= keys


def test_temperature_clamp_and_alpha_ramp():
    img, txt = unit(3, 4, seed=1), unit(3, 4, seed=2)
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=4, queue_size=0, alpha=0.0)).eval()
    kw = dict(momentum_image_features=img, momentum_text_features=txt)
    hot = loss_fn(img, txt, torch.tensor(math.log(5000.0)), **kw)["contrastive_loss"]
    capped = loss_fn(img, txt, torch.tensor(math.log(1000.0)), **kw)["contrastive_loss"]
    assert hot.item() == pytest.approx(capped.item(), abs=1e-6)  # temp >= 0.001
    assert loss_fn.logit_scale_range == pytest.approx((math.log(2), math.log(1000)))
    ramp = AlbefItcLoss(AlbefItcConfig(embed_dim=4, queue_size=0, alpha=0.4, alpha_ramp=0.2))
    assert ramp.alpha(0.0) == 0.0
    assert ramp.alpha(0.1) == pytest.approx(0.2)
    assert ramp.alpha(0.9) == pytest.approx(0.4)


def test_missing_momentum_features_and_wrong_width_are_user_errors():
    img = unit(2, 4)
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=4, queue_size=4))
    with pytest.raises(UserError, match="momentum_image_features"):
        loss_fn(img, img, torch.tensor(2.0))
    wide = AlbefItcLoss(AlbefItcConfig(embed_dim=8, queue_size=4))
    with pytest.raises(UserError, match="embed_dim"):
        wide(img, img, torch.tensor(2.0), momentum_image_features=img, momentum_text_features=img)


def test_momentum_encoder_ema_update_and_frozen():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = MomentumEncoder(model, momentum=0.9)
    old = ema.module[0].weight.clone()
    assert all(not p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, 0.9 * old + 0.1 * model[0].weight)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 0.2))
    out = ema(torch.randn(4, 3))
    assert not out.requires_grad
    with pytest.raises(UserError, match="momentum"):
        MomentumEncoder(model, momentum=1.5)


def test_training_step_enqueues_momentum_not_online_features():
    # ALBEF's _dequeue_and_enqueue(image_feat_m, text_feat_m): the queue holds the momentum
    # encoder's features. Online and momentum features differ here so a swap is visible.
    img, txt = unit(2, 3, seed=1), unit(2, 3, seed=2)
    img_m, txt_m = unit(2, 3, seed=3), unit(2, 3, seed=4)
    loss_fn = AlbefItcLoss(AlbefItcConfig(embed_dim=3, queue_size=3)).train()
    loss_fn(img, txt, torch.tensor(0.0), momentum_image_features=img_m,
            momentum_text_features=txt_m)
    assert torch.equal(loss_fn.image_queue[:2], img_m)
    assert torch.equal(loss_fn.text_queue[:2], txt_m)
    assert int(loss_fn.queue_filled) == 2 and int(loss_fn.queue_ptr) == 2
    # next step, alpha = 0 and s = 2 (logit_scale 0 clamps up to ln 2, temp <= 0.5): the queued
    # momentum rows are extra negatives
    img2, txt2 = unit(1, 3, seed=5), unit(1, 3, seed=6)
    img2_m, txt2_m = unit(1, 3, seed=7), unit(1, 3, seed=8)
    cfg = AlbefItcConfig(embed_dim=3, queue_size=3, alpha=0.0)
    step2 = AlbefItcLoss(cfg).train()
    step2.load_state_dict(loss_fn.state_dict())
    out = step2(img2, txt2, torch.tensor(0.0), momentum_image_features=img2_m,
                momentum_text_features=txt2_m)["contrastive_loss"]
    i2t = 2 * (img2 @ torch.cat([txt2_m, txt_m]).T)[0]  # (3,): positive, then the queue
    t2i = 2 * (txt2 @ torch.cat([img2_m, img_m]).T)[0]
    expected = (-torch.log_softmax(i2t, 0)[0] - torch.log_softmax(t2i, 0)[0]) / 2
    assert out.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.equal(step2.image_queue[2], img2_m[0])  # wrote at the pointer, slot 2
