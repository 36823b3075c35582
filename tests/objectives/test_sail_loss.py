"""SAIL: multi-positive sigmoid loss and the gated-MLP head."""

import math

import pytest
import torch

from vlkit.errors import UserError
from vlkit.objectives import SAIL_INIT_LOGIT_BIAS, SAIL_INIT_LOGIT_SCALE, SAILHead, SailLoss

IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
# Two captions per image, grouped by image: rows 0-1 describe image 0, rows 2-3 image 1.
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])


def logsigmoid(x):
    return -math.log1p(math.exp(-x))


def test_multi_positive_hand_computed():
    # s = 2, b = -1: z = 2 * IMG @ TXT^T - 1 = [[1, 0.2, -1, 0.6], [-1, 0.6, 1, 0.2]];
    # positives: columns 0, 1 for image 0 and 2, 3 for image 1.
    expected = -(
        logsigmoid(1) + logsigmoid(0.2) + logsigmoid(1) + logsigmoid(-0.6)
        + logsigmoid(1) + logsigmoid(-0.6) + logsigmoid(1) + logsigmoid(0.2)
    ) / 2
    loss = SailLoss()(IMG, TXT, torch.tensor(math.log(2.0)), torch.tensor(-1.0))
    assert loss["contrastive_loss"].item() == pytest.approx(expected, abs=1e-6)


def test_explicit_positive_mask_matches_grouped_layout_and_changes_loss():
    args = (IMG, TXT, torch.tensor(math.log(2.0)), torch.tensor(-1.0))
    grouped = SailLoss()(*args)["contrastive_loss"]
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]])
    explicit = SailLoss()(*args, positive_mask=mask)["contrastive_loss"]
    assert explicit.item() == pytest.approx(grouped.item(), abs=1e-6)
    other = SailLoss()(*args, positive_mask=torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0]]))
    assert other["contrastive_loss"].item() != pytest.approx(grouped.item(), abs=1e-3)


def test_bad_text_count_and_mask_shape_are_user_errors():
    args = (IMG, TXT[:3], torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(UserError, match="captions per image"):
        SailLoss()(*args)
    with pytest.raises(UserError, match="positive_mask"):
        SailLoss()(IMG, TXT, torch.tensor(0.0), torch.tensor(0.0), positive_mask=torch.ones(3, 3))


def test_init_constants():
    assert SAIL_INIT_LOGIT_SCALE == pytest.approx(math.log(20))
    assert SAIL_INIT_LOGIT_BIAS == -10
    assert SailLoss.init_logit_scale == pytest.approx(math.log(20))


def test_sail_head_is_a_gated_mlp():
    torch.manual_seed(0)
    head = SAILHead(3, 5)
    assert head.gate.out_features == 24 and head.up.out_features == 24  # expansion 8
    x = torch.randn(4, 3)
    gate = torch.clamp(x @ head.gate.weight.T + head.gate.bias, 0, 6)  # ReLU6
    up = x @ head.up.weight.T + head.up.bias
    expected = (gate * up) @ head.out.weight.T + head.out.bias
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert SAILHead(3, 2, expansion=2)(x).shape == (4, 2)
