"""bf16 autocast through vlkit's open_clip blocks (models.openclip_towers.resblock /
resblock_rows): the dtypes open_clip's own blocks give, no extra fp32 round trips, and the same
features as open_clip's forward under the same autocast (bf16 rounding apart)."""

from __future__ import annotations

import pytest
import torch

import vlkit.models as M
from vlkit.models.openclip_towers import resblock, resblock_rows

TEXTS = ["a photo of a cat", "a red heart", "grinning face with big eyes"]
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture
def pair(tiny_cfg, tmp_path):
    """open_clip's own CLIP and vlkit's load of the same weights, both in train mode (no dropout)."""
    from open_clip import CLIP
    from open_clip.tokenizer import SimpleTokenizer

    M.register_openclip_arch("vlkit-test-bf16", tiny_cfg)
    torch.manual_seed(5)
    original = CLIP(**tiny_cfg).train()
    torch.save(original.state_dict(), tmp_path / "w.pt")
    ours = M.load(f"openclip:vlkit-test-bf16@{tmp_path / 'w.pt'}").train()
    return original, ours, SimpleTokenizer(context_length=16)(TEXTS)


@pytest.mark.parametrize("residual", [torch.bfloat16, torch.float32])  # vision stream / text stream
def test_a_block_under_autocast_keeps_open_clips_dtypes(pair, residual):
    original, _, _ = pair
    block = original.visual.transformer.resblocks[0]
    x = torch.randn(2, 5, block.attn.embed_dim, generator=torch.Generator().manual_seed(0)).to(residual)
    with torch.autocast(**BF16):
        theirs = block(x)
        ours = resblock(block, x)
        rows = resblock_rows(block, x)  # the CLS row alone
    # the residual stream keeps its dtype (bf16 + bf16, or fp32 + a bf16 branch promoted to fp32)
    assert ours.dtype == theirs.dtype == residual and rows.dtype == residual
    assert torch.allclose(ours.float(), theirs.float(), atol=0.05, rtol=0.02)
    assert torch.allclose(rows[:, 0].float(), ours[:, 0].float(), atol=0.05, rtol=0.02)


def test_features_under_bf16_autocast_match_open_clips(pair):
    original, ours, tokens = pair
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.autocast(**BF16):
        theirs_i, theirs_t = original.encode_image(x, normalize=True), original.encode_text(tokens, normalize=True)
        ours_i, ours_t = ours.encode_image(x), ours.encode_text(TEXTS)
    assert ours_i.dtype == theirs_i.dtype == torch.bfloat16
    assert ours_t.dtype == theirs_t.dtype == torch.bfloat16
    # unit vectors: bf16 keeps 8 bits, so entries agree to about 1e-2
    assert (ours_i.float() - theirs_i.float()).abs().max() < 0.03
    assert (ours_t.float() - theirs_t.float()).abs().max() < 0.03
    with torch.no_grad():
        fp32_i = ours.encode_image(x)
    assert (ours_i.float() - fp32_i).abs().max() < 0.03  # and bf16 stays close to fp32


def test_grads_of_a_bf16_step_are_fp32_like_the_weights(pair):
    _, ours, _ = pair
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.autocast(**BF16):
        loss = (ours.encode_image(x) @ ours.encode_text(TEXTS).T).logsumexp(-1).mean()
    loss.backward()
    trainable = [p for p in ours.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}
    assert {p.grad.dtype for p in trainable if p.grad is not None} == {torch.float32}
    assert sum(p.grad is not None for p in trainable) > len(trainable) // 2
