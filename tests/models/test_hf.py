"""hf:DIR loads tiny CLIP and SigLIP models (built here with save_pretrained) to the features that
transformers itself computes; the layer-by-layer insides path equals transformers' forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlkit.models as M
from vlkit.errors import UserError

WORDS = ["[PAD]", "[BOS]", "[UNK]", "[EOS]", "a", "photo", "of", "cat", "dog", "red", "heart", "x"]
TEXTS = ["a photo of a cat", "red heart", "a dog"]


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _save_tokenizer(path, max_length: int) -> None:
    """A word-level fast tokenizer: [BOS] words [EOS], saved next to the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
                                  unk_token="[UNK]", model_max_length=max_length)
    tok.save_pretrained(str(path))


_TEXT = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             max_position_embeddings=12, pad_token_id=0, bos_token_id=1, eos_token_id=3)
_VISION = dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module", params=["clip", "siglip"])
def hf_dir(request, tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    path = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    if request.param == "clip":
        model = CLIPModel(CLIPConfig(text_config=_TEXT, vision_config=_VISION, projection_dim=16))
    else:
        model = SiglipModel(SiglipConfig(text_config=dict(_TEXT, projection_size=48), vision_config=_VISION))
    model.save_pretrained(str(path))
    _save_tokenizer(path, 12)
    return request.param, path, model.eval()


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
