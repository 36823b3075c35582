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

from vlkit.adapt.prompts import (ClassContext, PromptTokens, UnifiedContext, init_context, place_end,
                                 place_middle, placement)
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
