"""CLIP and SigLIP losses against values worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlkit.errors import UserError
from vlkit.objectives import (
    LN_100, SIGLIP_INIT_LOGIT_BIAS, SIGLIP_INIT_LOGIT_SCALE, ClipConfig, ClipLoss, SigLipLoss,
    clamp_logit_scale,
)

# Two unit-norm pairs in 2-D; with scale s = 2 the image->text logits are
#   2 * [[1*1 + 0*0, 1*0.6 + 0*0.8], [0*1 + 1*0, 0*0.6 + 1*0.8]] = [[2, 1.2], [0, 1.6]].
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
LOG2 = torch.tensor(math.log(2.0))


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


def test_clip_hand_computed():
    rows = [lse(2, 1.2) - 2, lse(0, 1.6) - 1.6]  # image -> text, positives on the diagonal
    cols = [lse(2, 0) - 2, lse(1.2, 1.6) - 1.6]  # text -> image (the transposed logits)
    expected = (sum(rows) / 2 + sum(cols) / 2) / 2
    out = ClipLoss()(IMG, TXT, LOG2)
    assert set(out) == {"contrastive_loss"}
    assert out["contrastive_loss"].item() == pytest.approx(expected, abs=1e-6)


def test_clip_label_smoothing_hand_computed():
    eps = 0.1  # 2 classes: positive target 1 - eps + eps/2 = 0.95, negative eps/2 = 0.05
    def row(pos, neg):
        z = lse(pos, neg)
        return -(0.95 * (pos - z) + 0.05 * (neg - z))
    expected = ((row(2, 1.2) + row(1.6, 0)) / 2 + (row(2, 0) + row(1.6, 1.2)) / 2) / 2
    loss = ClipLoss(ClipConfig(label_smoothing=eps))(IMG, TXT, LOG2)["contrastive_loss"]
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_clip_equals_cross_entropy_of_symmetric_logits_and_local_loss_matches():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(5, 4), dim=-1)
    txt = F.normalize(torch.randn(5, 4), dim=-1)
    scale = torch.tensor(2.3)
    logits = scale.exp() * img @ txt.T
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    for local in (False, True):
        loss = ClipLoss(ClipConfig(local_loss=local))(img, txt, scale)["contrastive_loss"]
        assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_clip_gradient_reaches_features_and_scale():
    img = IMG.clone().requires_grad_()
    scale = LOG2.clone().requires_grad_()
    ClipLoss()(img, TXT, scale)["contrastive_loss"].backward()
    assert img.grad.abs().sum() > 0 and scale.grad.item() != 0


def logsigmoid(x):
    return -math.log1p(math.exp(-x))


def test_siglip_hand_computed():
    # z = s * sim + b with s = 2, b = -1: [[1, 0.2], [-1, 0.6]]; label +1 on the diagonal.
    expected = -(logsigmoid(1) + logsigmoid(-0.2) + logsigmoid(1) + logsigmoid(0.6)) / 2
    out = SigLipLoss()(IMG, TXT, LOG2, torch.tensor(-1.0))
    assert out["contrastive_loss"].item() == pytest.approx(expected, abs=1e-6)


def test_siglip_init_constants_and_errors():
    assert SIGLIP_INIT_LOGIT_SCALE == pytest.approx(math.log(10))
    assert SIGLIP_INIT_LOGIT_BIAS == -10
    assert SigLipLoss.init_logit_bias == -10
    with pytest.raises(UserError, match="logit_bias"):
        SigLipLoss()(IMG, TXT, LOG2)
    with pytest.raises(UserError, match="sail"):
        SigLipLoss()(IMG, torch.cat([TXT, TXT]), LOG2, torch.tensor(-1.0))


def test_clamp_logit_scale_param_and_module():
    p = torch.nn.Parameter(torch.tensor(7.0))
    assert clamp_logit_scale(p)
    assert p.item() == pytest.approx(LN_100)
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(-1.0))
    assert clamp_logit_scale(model)
    assert model.logit_scale.item() == 0.0
    assert not clamp_logit_scale(torch.nn.Linear(2, 2))  # no logit_scale: nothing to do


# A bank of three captions: the two of TXT plus a third, (0, 1). Image 0's caption is row 0,
# image 1's is row 1, and row 2 is image 1's other caption (an alias): not a negative for it.
BANK = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])


def test_clip_text_bank_hand_computed():
    # image -> bank logits with s = 2: image 0 [2, 1.2, 0]; image 1 [0, 1.6, 2]
    bank_rows = [lse(2, 1.2, 0) - 2, lse(0, 1.6) - 1.6]  # image 1's other caption is left out
    cols = [lse(2, 0) - 2, lse(1.2, 1.6) - 1.6]  # text -> image stays in-batch
    expected = (sum(bank_rows) / 2 + sum(cols) / 2) / 2
    other = torch.tensor([[True, False, False], [False, True, True]])  # each image's captions
    loss = ClipLoss(ClipConfig(text_negatives="bank"))(
        IMG, TXT, LOG2, text_bank=BANK, text_bank_index=torch.tensor([0, 1]), text_bank_other=other)
    assert loss["contrastive_loss"].item() == pytest.approx(expected, abs=1e-6)
    # with the alias counted as a negative the loss is higher: the mask is what changed it
    unmasked = ClipLoss(ClipConfig(text_negatives="bank"))(
        IMG, TXT, LOG2, text_bank=BANK, text_bank_index=torch.tensor([0, 1]))["contrastive_loss"]
    assert unmasked.item() > expected + 0.1


def test_clip_text_bank_of_the_batch_texts_equals_in_batch_clip_with_label_smoothing():
    cfg = dict(label_smoothing=0.1)
    plain = ClipLoss(ClipConfig(**cfg))(IMG, TXT, LOG2)["contrastive_loss"]
    bank = ClipLoss(ClipConfig(text_negatives="bank", **cfg))(
        IMG, TXT, LOG2, text_bank=TXT, text_bank_index=torch.tensor([0, 1]),
        text_bank_other=torch.eye(2, dtype=torch.bool))["contrastive_loss"]
    assert bank.item() == pytest.approx(plain.item(), abs=1e-6)


def test_clip_text_bank_without_a_bank_is_a_user_error():
    with pytest.raises(UserError, match="text_bank"):
        ClipLoss(ClipConfig(text_negatives="bank"))(IMG, TXT, LOG2)
