"""LightCLIP: softened negative labels and relaxed patch-word matching."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlkit.objectives import ClipLoss, LightClipConfig, LightClipLoss, token_similarity

IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
LOG2 = torch.tensor(math.log(2.0))


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


def test_eps_zero_equals_clip():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(6, 4), dim=-1)
    txt = F.normalize(torch.randn(6, 4), dim=-1)
    scale = torch.tensor(1.7)
    light = LightClipLoss(LightClipConfig(eps_max=0.0))(img, txt, scale, progress=0.7)
    clip = ClipLoss()(img, txt, scale)
    assert set(light) == {"contrastive_loss"}  # no tokens given: no token term
    expected = clip["contrastive_loss"].item()
    assert light["contrastive_loss"].item() == pytest.approx(expected, abs=1e-6)


def test_softened_negatives_hand_computed():
    # progress 0.5 with a linear ramp to eps_max = 0.2 at progress 1: eps = 0.1. With one
    # negative per row the target is [0.9 on the positive, 0.1 on the negative].
    def row(pos, neg):
        z = lse(pos, neg)
        return -(0.9 * (pos - z) + 0.1 * (neg - z))
    expected = ((row(2, 1.2) + row(1.6, 0)) / 2 + (row(2, 0) + row(1.6, 1.2)) / 2) / 2
    loss_fn = LightClipLoss(LightClipConfig(eps_max=0.2))
    loss = loss_fn(IMG, TXT, LOG2, progress=0.5)["contrastive_loss"]
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_eps_schedule_ramps_then_holds():
    loss_fn = LightClipLoss(LightClipConfig(eps_max=0.2, ramp_end=0.5))
    assert loss_fn.eps(0.0) == 0.0
    assert loss_fn.eps(0.25) == pytest.approx(0.1)
    assert loss_fn.eps(0.5) == pytest.approx(0.2)
    assert loss_fn.eps(0.9) == pytest.approx(0.2)
    assert loss_fn.eps(None) == pytest.approx(0.2)  # no progress given: full softening


# Patches: image 0 sees both directions, image 1 only the x direction (twice).
PATCHES = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
# Words: text 0 = (x, y); text 1 = (y, pad). The pad would match image 1 if it were counted.
WORDS = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
MASK = torch.tensor([[1, 1], [1, 0]])


def test_token_similarity_relaxed_matching_by_hand():
    # S[i, j] = mean over words of text j of the best patch of image i:
    # S[0,0] = (1 + 1)/2; S[0,1] = 1; S[1,0] = (1 + 0)/2; S[1,1] = 0 (the pad is ignored).
    expected = torch.tensor([[1.0, 1.0], [0.5, 0.0]])
    sims = token_similarity(PATCHES, WORDS, MASK)
    assert torch.allclose(sims, expected, atol=1e-6)
    assert torch.allclose(token_similarity(PATCHES, WORDS, MASK, chunk=1), expected, atol=1e-6)
    # Tokens are normalised inside: scaling them changes nothing.
    assert torch.allclose(token_similarity(3 * PATCHES, 0.5 * WORDS, MASK), expected, atol=1e-6)


def test_token_loss_hand_computed():
    # logits = 2 * S = [[2, 2], [1, 0]]; symmetric hard-label CE, weight 0.5.
    rows = [lse(2, 2) - 2, lse(1, 0) - 0]
    cols = [lse(2, 1) - 2, lse(2, 0) - 0]
    expected = 0.5 * (sum(rows) / 2 + sum(cols) / 2) / 2
    out = LightClipLoss(LightClipConfig(token_weight=0.5))(
        IMG, TXT, LOG2, image_tokens=PATCHES, text_tokens=WORDS, text_mask=MASK, progress=0.0
    )
    assert out["token_loss"].item() == pytest.approx(expected, abs=1e-6)
