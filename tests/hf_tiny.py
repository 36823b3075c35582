"""Tiny Hugging Face models saved to a folder, for tests that need a local `hf:` model (no network)."""

from __future__ import annotations

import torch

WORDS = ["[PAD]", "[BOS]", "[UNK]", "[EOS]", "a", "photo", "of", "cat", "dog", "red", "heart", "x"]
TEXTS = ["a photo of a cat", "red heart", "a dog"]

_TEXT = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             max_position_embeddings=12, pad_token_id=0, bos_token_id=1, eos_token_id=3)
_VISION = dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


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


def save_tiny_hf(path, family: str):
    """A seeded tiny CLIPModel / SiglipModel (32 px) and its tokenizer in ``path``; returns the model."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    if family == "clip":
        model = CLIPModel(CLIPConfig(text_config=_TEXT, vision_config=_VISION, projection_dim=16))
    else:
        model = SiglipModel(SiglipConfig(text_config=dict(_TEXT, projection_size=48), vision_config=_VISION))
    model.save_pretrained(str(path))
    _save_tokenizer(path, 12)
    return model.eval()


def save_tiny_bert(path):
    """A seeded tiny BertModel (a sentence encoder's shape) and its tokenizer in ``path``."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0)).save_pretrained(str(path))
    _save_tokenizer(path, 12)
    return path
