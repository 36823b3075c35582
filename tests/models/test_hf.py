"""hf:DIR loads tiny CLIP and SigLIP models (built here with save_pretrained) to the features that
transformers itself computes; the layer-by-layer insides path equals transformers' forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlkit.models as M
from vlkit.errors import UserError

from hf_tiny import TEXTS, save_tiny_hf


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["clip", "siglip"])
def hf_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return request.param, path, save_tiny_hf(path, request.param)


def test_features_match_transformers(hf_dir):
    family, path, ref = hf_dir
    model = M.load(f"hf:{path}")
    x = images(3, 32)
    with torch.no_grad():
        want_img = F.normalize(ref.get_image_features(pixel_values=x).pooler_output, dim=-1)
        assert torch.allclose(model.encode_image(x), want_img, atol=1e-5)
        tokens = model.tokenize(TEXTS)
        kwargs = {"attention_mask": tokens["attention_mask"]} if family == "clip" else {}  # SigLIP: no mask
        want_txt = F.normalize(ref.get_text_features(input_ids=tokens["input_ids"], **kwargs).pooler_output, dim=-1)
        assert torch.allclose(model.encode_text(TEXTS), want_txt, atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(ref.logit_scale.item())
    assert (model.logit_bias is not None) == (family == "siglip")
    assert model.visual.width == 48 and model.text.width == 32
    assert model.embed_dim == (16 if family == "clip" else 48)


def test_insides_equal_the_transformers_forward(hf_dir):
    _, path, _ = hf_dir
    model = M.load(f"hf:{path}")
    x, tokens = images(2, 32), model.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.allclose(model.visual.forward_prompted(x, None), model.visual(x), atol=1e-5)
        embeds = model.text.embed_tokens(tokens["input_ids"])
        assert torch.allclose(model.text.forward_embeddings(embeds, tokens), model.text(tokens), atol=1e-5)
        deep = {1: torch.randn(2, model.text.width)}
        assert not torch.allclose(model.text.forward_embeddings(embeds, tokens, deep_prompts=deep), model.text(tokens), atol=1e-4)
        prompted = model.visual.forward_prompted(x, {0: torch.randn(3, model.visual.width)})
        assert not torch.allclose(prompted, model.visual(x), atol=1e-4)


def test_save_load_keeps_weights_and_tokenizer(hf_dir, tmp_path):
    _, path, _ = hf_dir
    model = M.load(f"hf:{path}")
    model.save(tmp_path / "saved")
    back = M.load(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "assets" / "text" / "tokenizer.json").is_file()
    x = images(2, 32)
    with torch.no_grad():
        assert torch.equal(back.encode_image(x), model.encode_image(x))
        assert torch.equal(back.encode_text(TEXTS), model.encode_text(TEXTS))
    assert back.fingerprint() == model.fingerprint()


def test_other_model_types_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserError, match="valid: clip, siglip"):
        M.load(f"hf:{tmp_path}")
    with pytest.raises(UserError, match="not found"):
        M.load("hf:/no/such/dir")
