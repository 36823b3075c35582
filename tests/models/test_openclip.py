"""open_clip: local checkpoints load to the original's outputs; the insides path equals open_clip's
own forward; prompts change (and train) the output; bad names fail with the valid ones listed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import vlkit.models as M
from vlkit.errors import UserError


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


TEXTS = ["a photo of a cat", "a red heart", "grinning face with big eyes"]


@pytest.fixture
def original(tiny_cfg):
    """A tiny open_clip CLIP (its own class, its own init), registered as vlkit-test-tiny."""
    from open_clip import CLIP

    M.register_openclip_arch("vlkit-test-tiny", tiny_cfg)
    torch.manual_seed(3)
    model = CLIP(**copy.deepcopy(tiny_cfg)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    return model


@pytest.fixture(scope="module")
def reference_tokens():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=16)(TEXTS)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_checkpoint_gives_the_original_outputs(tmp_path, original, reference_tokens, suffix):
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".pt":
        torch.save(original.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(path))
    model = M.load(f"openclip:vlkit-test-tiny@{path}")
    x = images(4, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), original.encode_image(x, normalize=True), atol=1e-6)
        assert torch.allclose(model.encode_text(TEXTS), original.encode_text(reference_tokens, normalize=True), atol=1e-6)
    assert model.logit_scale.item() == 3.0
    assert model.visual.width == 64 and model.text.width == 32 and model.embed_dim == 32


def test_insides_equal_open_clip_forward(original, reference_tokens, tmp_path):
    torch.save(original.state_dict(), tmp_path / "w.pt")
    model = M.load(f"openclip:vlkit-test-tiny@{tmp_path / 'w.pt'}")
    x = images(3, 32)
    with torch.no_grad():
        plain = original.visual(x)  # open_clip's own forward
        assert torch.allclose(model.visual.forward_prompted(x, prompts={}), plain, atol=1e-6)
        tokens = model.text.as_tokens(reference_tokens)
        inside = model.text.forward_embeddings(model.text.embed_tokens(tokens["input_ids"]), tokens)
        assert torch.allclose(inside, original.encode_text(reference_tokens), atol=1e-6)


def test_training_through_vlkit_blocks_gives_open_clips_loss_and_gradients(original, reference_tokens, tmp_path):
    """vlkit runs open_clip's blocks with fewer copies (models.openclip_towers.resblock): same math."""
    torch.save(original.state_dict(), tmp_path / "w.pt")
    model = M.load(f"openclip:vlkit-test-tiny@{tmp_path / 'w.pt'}").train()
    original.train()
    from vlkit.models.openclip_towers import _fast_block_ok

    assert all(_fast_block_ok(b) for b in [*model.visual.model.transformer.resblocks, *model.text.transformer.resblocks])
    x = images(4, 32)

    def loss_and_grads(image_features, text_features, params):
        logits = image_features @ text_features[:3].T
        loss = F.cross_entropy(logits[:3], torch.arange(3))
        grads = torch.autograd.grad(loss, params)
        return loss, {n: g for n, g in zip(names, grads)}

    names = [n for n, _ in original.named_parameters() if not n.startswith("logit")]
    ours_params = dict(model.named_parameters())  # the towers keep open_clip's names, one level down
    ours_by_name = {n: ours_params["visual.model." + n[len("visual."):] if n.startswith("visual.") else "text." + n]
                    for n in names}
    theirs = loss_and_grads(original.encode_image(x, normalize=True), original.encode_text(reference_tokens, normalize=True),
                            [p for n, p in original.named_parameters() if n in names])
    ours = loss_and_grads(model.encode_image(x), model.encode_text(TEXTS), [ours_by_name[n] for n in names])
    assert torch.allclose(ours[0], theirs[0], atol=1e-6)
    for n in names:
        assert torch.allclose(ours[1][n], theirs[1][n], atol=1e-5, rtol=1e-4), n


def test_prompts_change_the_output_and_receive_gradients(tiny):
    x = images(2, 32)
    tokens = tiny.tokenize(["X X X X cat.", "X X X X dog."])
    base_img, base_txt = tiny.visual(x).detach(), tiny.text(tokens).detach()
    vis_prompts = {0: torch.randn(4, tiny.visual.width, requires_grad=True),
                   1: torch.randn(2, 4, tiny.visual.width, requires_grad=True)}
    out = tiny.visual.forward_prompted(x, vis_prompts)
    assert not torch.allclose(out, base_img, atol=1e-4)
    deep = [None, torch.randn(4, tiny.text.width, requires_grad=True)]
    embeds = tiny.text.embed_tokens(tokens["input_ids"])
    txt = tiny.text.forward_embeddings(embeds, tokens, deep_prompts=deep, prompt_start=1)
    assert not torch.allclose(txt, base_txt, atol=1e-4)
    shallow = embeds.clone()
    shallow[:, 1:5] = torch.randn(4, tiny.text.width)  # CoOp: replace the "X" rows
    assert not torch.allclose(tiny.text.forward_embeddings(shallow, tokens), base_txt, atol=1e-4)
    (out.sum() + txt.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*vis_prompts.values(), deep[1]])


def test_token_features_for_token_losses(tiny):
    out = tiny.encode_image(images(2, 32), return_tokens=True)
    assert out["features"].shape == (2, 64) and out["tokens"].shape == (2, 16, 64)  # 4x4 patches
    txt = tiny.encode_text(["a cat", "a small red heart"], return_tokens=True)
    # padding after the batch's last EOT is trimmed (causal mask: it never reaches the EOT)
    assert txt["tokens"].shape == (2, 6, 64)
    assert txt["mask"].sum(1).tolist() == [4, 6]  # SOT + words + EOT
    assert torch.allclose(txt["features"], tiny.encode_text(["a cat", "a small red heart"]), atol=1e-6)


def test_trimmed_padding_gives_the_full_context_features(tiny):
    """The fast path (padding trimmed) equals running all 32 context positions."""
    tokens = tiny.tokenize(["a cat", "a small red heart on a table"])
    assert tokens["input_ids"].shape[1] == 32
    text = tiny.text
    full = text.forward_embeddings(text.embed_tokens(tokens["input_ids"]), tokens)  # no trimming
    assert torch.allclose(text(tokens), full, atol=1e-5)


def test_under_torch_compile_the_text_tower_skips_the_trim_with_no_graph_break(tiny, monkeypatch):
    """The trim's length is data (int() of a tensor): compiled, the full context runs instead,
    in one graph, with the same features as the trimmed eager path."""
    tokens = tiny.tokenize(["a cat", "a small red heart on a table"])
    text = tiny.text
    with torch.no_grad():
        trimmed = text(tokens, return_tokens=True)
        with monkeypatch.context() as m:
            m.setattr(torch.compiler, "is_compiling", lambda: True)
            untrimmed = text(tokens, return_tokens=True)
    assert trimmed["tokens"].shape[1] == 9 and untrimmed["tokens"].shape[1] == 32  # the two paths ran
    assert torch.allclose(trimmed["pooled"], untrimmed["pooled"], atol=1e-5)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(text)(tokens)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, [str(r.reason)[:120] for r in explained.break_reasons]


def test_the_last_block_computes_only_the_pooled_token(tiny, monkeypatch):
    """CLS and EOT pooling read one position: the last block runs for it alone, same features."""
    import vlkit.models.openclip_towers as O

    seen = []
    rows_only = O.resblock_rows

    def spy(*args, **kwargs):
        out = rows_only(*args, **kwargs)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(O, "resblock_rows", spy)
    x = images(3, 32)
    tokens = tiny.tokenize(["a cat", "a small red heart on a table", "X"])
    with torch.no_grad():
        fast_image, fast_text = tiny.visual(x), tiny.text(tokens)
        assert seen == [(3, 1, tiny.visual.width), (3, 1, tiny.text.width)]  # one row per image, per caption
        full_image = tiny.visual.forward_prompted(x, prompts={})  # every block in full
        full_text = tiny.text(tokens, return_tokens=True)["pooled"]
    assert len(seen) == 2
    assert torch.allclose(fast_image, full_image, atol=1e-5)
    assert torch.allclose(fast_text, full_text, atol=1e-5)


def test_bad_prompt_width_is_a_user_error(tiny):
    with pytest.raises(UserError, match="width is 64"):
        tiny.visual.forward_prompted(images(1, 32), {0: torch.zeros(2, 7)})
    tokens = tiny.tokenize(["a cat"])
    with pytest.raises(UserError, match="layer 1"):
        tiny.text.forward_embeddings(tiny.text.embed_tokens(tokens["input_ids"]), tokens, deep_prompts={0: torch.zeros(1, 64)})


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(UserError, match="valid: .*ViT-B-32"):
        M.load("openclip:ViT-B-99")
    with pytest.raises(UserError, match="laion2b_s34b_b79k.*local checkpoint"):
        M.load("openclip:ViT-B-32@no_such_tag")
    with pytest.raises(UserError, match="not found"):
        M.load(f"openclip:ViT-B-32@{tmp_path / 'missing.pt'}")


def test_a_checkpoint_for_another_architecture_is_a_user_error(tmp_path, original, tiny_cfg):
    torch.save(original.state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match="does not fit"):
        M.build_model({"builder": "openclip", "arch": "x", "model_cfg": {**tiny_cfg, "embed_dim": 48},
                       "pretrained": str(tmp_path / "w.pt")})


def test_custom_text_clip_with_logit_bias(tmp_path, tiny_cfg):
    """CustomTextCLIP (text under .text), bidirectional text pooled at the last token, a bias."""
    from open_clip import CustomTextCLIP

    cfg = tiny_cfg
    cfg["text_cfg"].update(no_causal_mask=True, pool_type="last")
    torch.manual_seed(0)
    original = CustomTextCLIP(**cfg, init_logit_bias=-10.0).eval()
    torch.save(original.state_dict(), tmp_path / "w.pt")
    M.register_openclip_arch("vlkit-test-custom", {**cfg, "custom_text": True, "init_logit_bias": -10.0})
    model = M.load(f"openclip:vlkit-test-custom@{tmp_path / 'w.pt'}")
    ids = model.tokenize(TEXTS)["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model.encode_text(ids), F.normalize(original.encode_text(ids), dim=-1), atol=1e-6)
    assert model.logit_bias.item() == -10.0
