"""Prompt pieces the mutation run (docs/testing.md) found untested, on tiny hand-made tensors.

CoOp (arXiv 2109.01134) lays out per class ``[SOS][ctx][name][.][EOT]`` (end), with the context
split around the name (middle) or after it (front); a class-specific context (CSC) initialised
from a phrase copies the phrase to every class. ``_per_class`` only reads ``embeds``, ``start``,
``n_ctx``, ``name_start`` and ``name_lens`` of a ``PromptTokens``, so a namespace with integer
"embeddings" (each row's value is its position) shows every row's source by eye.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from vlkit.adapt.prompts import (ClassContext, PromptTokens, UnifiedContext, encode_prompts, init_context,
                                 place_end, place_middle, placement, prompt_start)
from vlkit.errors import UserError


def _prompts(n_ctx=3, name_lens=(1, 2), length=8, dtype=torch.float16):
    """Two classes: [SOS] X*n_ctx name(name_len) . EOT pad...; embeds (2, L, 1) = 100 * class + position."""
    pos = torch.arange(length, dtype=dtype)
    embeds = torch.stack([100 * i + pos for i in range(len(name_lens))]).unsqueeze(-1)  # (2, L, 1)
    return SimpleNamespace(embeds=embeds, start=1, n_ctx=n_ctx, name_start=1 + n_ctx, name_lens=list(name_lens))


def test_middle_by_hand_keeps_the_embeddings_dtype():
    p = _prompts()
    ctx = torch.tensor([[[-1.0], [-2.0], [-3.0]], [[-4.0], [-5.0], [-6.0]]])  # (2, 3, 1) float32
    got = place_middle(p, ctx)
    assert got.dtype == torch.float16  # the context is cast to the embeddings' dtype
    # class 0: SOS, ctx[:1], name (pos 4), ctx[1:], then '.', EOT, pad (pos 5, 6, 7)
    assert got[0, :, 0].tolist() == [0, -1, 4, -2, -3, 5, 6, 7]
    # class 1: SOS, ctx[:1], name (pos 4, 5), ctx[1:], then pos 6, 7
    assert got[1, :, 0].tolist() == [100, -4, 104, 105, -5, -6, 106, 107]
    assert place_end(p, ctx).dtype == torch.float16


def test_middle_and_front_need_the_whole_prefix_learned():
    p = _prompts()
    p.name_start = p.start + p.n_ctx + 1  # a prefix one token longer than the context (MaPLe-style)
    msg = ("class_token_position middle/front needs the whole prefix learned; leave n_ctx at its "
           "default with ctx_init, or use class_token_position=end")
    with pytest.raises(UserError, match=f"^{re.escape(msg)}$"):
        place_middle(p, torch.zeros(2, 3, 1))


def test_class_context_from_a_phrase_copies_it_to_every_class():
    phrase = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (n_ctx 3, W 2)
    ctx = ClassContext(phrase, n_cls=2)(2)
    assert ctx.shape == (2, 3, 2)
    assert torch.equal(ctx[0], phrase) and torch.equal(ctx[1], phrase)
    with pytest.raises(ValueError, match=r"^class context init has 2 rows for 3 classes$"):
        ClassContext(torch.zeros(2, 3, 4), n_cls=3)
    with pytest.raises(ValueError, match=r"^a unified context init is \(n_ctx, W\), got \(2, 3, 4\)$"):
        UnifiedContext(torch.zeros(2, 3, 4), n_cls=2)


def test_a_one_token_phrase_is_a_context_of_one(tiny_model):
    ids = tiny_model.tokenize(["photo"])["input_ids"][0]
    with torch.no_grad():
        emb = tiny_model.text.embed_tokens(ids[None, 1:2])[0]  # (1, W): the token after SOS
    init, prefix, n = init_context(tiny_model, 0, "photo")
    assert n == 1 and prefix == "photo" and torch.equal(init, emb)


def test_unknown_placement_lists_the_valid_ones():
    msg = "unknown class_token_position 'midle' (did you mean 'middle'?); valid: end, front, middle"
    with pytest.raises(UserError, match=f"^{re.escape(msg)}$"):
        placement("midle")


def test_prompt_tokens_repeat_for_a_batch(tiny_model):
    prompts = PromptTokens(tiny_model, ["zero", "sea lion"], 2)
    once = prompts.tokens()
    assert torch.equal(once["input_ids"], prompts.input_ids)
    twice = prompts.tokens(repeat=2)  # (2 * n_cls, L): the class rows, then again (CoCoOp's batch)
    assert torch.equal(twice["input_ids"], torch.cat([prompts.input_ids] * 2))
    assert torch.equal(twice["attention_mask"], torch.cat([prompts.attention_mask] * 2))


class _StubModel:
    """Tokenizer: [SOS=101] one id 7 per word [EOT=102], padded with 0 to 8; embeddings: the id
    as a (1,)-vector. ``pooling``: the text tower's pooling name, or no such attribute (None)."""

    device = "cpu"

    def __init__(self, pooling=None):
        self.text = SimpleNamespace(embed_tokens=lambda ids: ids.float()[..., None])
        if pooling is not None:
            self.text.pooling = pooling

    def tokenize(self, texts):
        rows = [[101] + [7] * len(t.split()) + [102] for t in texts]
        ids = torch.tensor([r + [0] * (8 - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


@pytest.mark.parametrize("pooling, length", [(None, 6), ("eot", 6), ("last token", 8)])
def test_prompts_are_cut_after_the_longest_unless_the_tower_pools_the_last_position(pooling, length):
    # "X X zero." and "X X sea lion." are 3 and 4 words: 5 and 6 tokens with SOS and EOT
    prompts = PromptTokens(_StubModel(pooling), ["zero", "sea lion"], 2)
    assert prompts.input_ids.shape == (2, length) and prompts.embeds.shape == (2, length, 1)
    assert prompts.input_ids[1, :6].tolist() == [101, 7, 7, 7, 7, 102]


def test_an_init_phrase_is_the_prompt_prefix_and_must_cover_n_ctx(tiny_model):
    prompts = PromptTokens(tiny_model, ["zero"], 4, prefix="a photo of a")
    written = tiny_model.tokenize(["a photo of a zero."])["input_ids"][:, :prompts.input_ids.shape[1]]
    assert torch.equal(prompts.input_ids, written)
    msg = "the prompt prefix 'a photo' gives 2 tokens, fewer than n_ctx=4; use a longer init phrase or a smaller n_ctx"
    with pytest.raises(UserError, match=f"^{re.escape(msg)}$"):
        PromptTokens(tiny_model, ["zero"], 4, prefix="a photo")


def test_init_context_counts(tiny_model):
    _, _, n = init_context(tiny_model, 1, "a photo of")  # MaPLe-style: the first token only
    assert n == 1
    init, _, n = init_context(tiny_model, 8, "a photo")  # fewer tokens than asked: all of them
    assert n == 2 and init.shape == (2, tiny_model.text.width)
    init, prefix, n = init_context(tiny_model, 1, "")  # one random context token is allowed
    assert n == 1 and prefix is None and init.shape == (1, tiny_model.text.width)


def test_place_end_uses_the_embeddings_it_is_given():
    p = _prompts(n_ctx=2, name_lens=(1,), length=5)
    other = -p.embeds  # e.g. MaPLe's per-layer embeddings
    got = place_end(p, torch.tensor([[[50.0], [60.0]]]), embeds=other)
    assert got[0, :, 0].tolist() == [0, 50, 60, -3, -4]


def test_encode_prompts_passes_chunks_and_the_prompt_start():
    calls = []

    def forward_embeddings(embeds, tokens, deep_prompts=None, prompt_start=None):
        calls.append((embeds.shape[0], tokens["input_ids"].tolist(), prompt_start))
        return embeds[:, 0, :]  # (n_i, W): the first position as the pooled feature

    model = SimpleNamespace(text=SimpleNamespace(forward_embeddings=forward_embeddings),
                            project_text=lambda x: 2 * x)
    embeds = torch.arange(5.0).view(5, 1, 1)  # (N 5, L 1, W 1)
    tokens = {"input_ids": torch.arange(5).view(5, 1)}
    out = encode_prompts(model, embeds, tokens, start=3, chunk=2)
    assert out[:, 0].tolist() == [0, 2, 4, 6, 8]
    assert calls == [(2, [[0], [1]], 3), (2, [[2], [3]], 3), (1, [[4]], 3)]
    calls.clear()
    encode_prompts(model, embeds, tokens)  # no chunk: one pass; CLIP's prompts start after SOS
    assert calls == [(5, [[0], [1], [2], [3], [4]], 1)]


def test_prompt_tokens_keep_nothing_in_the_state_dict():
    # frozen token ids, masks and embeddings are rebuilt from the model: a saved adapter holds none
    prompts = PromptTokens(_StubModel(), ["zero", "sea lion"], 2)
    assert dict(prompts.named_buffers()).keys() == {"embeds", "input_ids", "attention_mask"}
    assert prompts.state_dict() == {}


def test_prompt_start_is_zero_when_text_changes_no_position():
    deaf = SimpleNamespace(tokenize=lambda texts: {"input_ids": torch.zeros(len(texts), 4, dtype=torch.long)})
    assert prompt_start(deaf) == 0
