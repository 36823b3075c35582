"""Prompt assembly by hand (CoOp's layout), the start position, context init, chunked encoding.

CoOp (arXiv 2109.01134; KaiyangZhou/CoOp ``trainers/coop.py``, ``PromptLearner.forward``) writes
the prompt "X X ... X <name>." and then, per class:

- end:    [SOS] ctx_0..ctx_{n-1} <name> . [EOT]
- middle: [SOS] ctx_0..ctx_{n//2-1} <name> ctx_{n//2}..ctx_{n-1} . [EOT]
- front:  [SOS] <name> ctx_0..ctx_{n-1} . [EOT]

The existing plain-text test sets every context row to the same "X" embedding, so it cannot see
context rows in the wrong order or the wrong half split. Here each class has its own distinct
rows (as with CSC), n_ctx is odd, and class names take one to three tokens; the expected
sequences are written position by position from token ids of the model's tokenizer.
The last test checks CoOp-CSC's random context is drawn per class, as CoOp draws it.
"""

from __future__ import annotations

import pytest
import torch

from vlkit.adapt.prompts import (PromptTokens, encode_prompts, init_context, place_end, place_front,
                                 place_middle, placement, prompt_start)
from vlkit.errors import UserError

NAMES = ["sea lion", "zero", "hot dog stand"]  # 2, 1 and 3 tokens
N_CTX = 5


def _ids(model, text):
    """Token ids of ``text`` without the start and end tokens."""
    tok = model.tokenize([text])
    n = int(tok["attention_mask"].sum())
    return tok["input_ids"][0, 1:n - 1].tolist()


def _layout(model, position, n_ctx):
    """Per class: the token id at each position, "ctx<j>" where context row j goes."""
    empty = model.tokenize([""])["input_ids"][0]
    sos, eot = int(empty[0]), int(empty[1])
    dot = _ids(model, ".")
    ctx = [f"ctx{j}" for j in range(n_ctx)]
    half = n_ctx // 2
    rows = []
    for name in NAMES:
        words = _ids(model, name)
        body = {"end": ctx + words, "middle": ctx[:half] + words + ctx[half:], "front": words + ctx}[position]
        rows.append([sos] + body + dot + [eot])
    return rows


def _expected(model, rows, ctx):
    """(n_cls, L, W): token embeddings at id positions, ctx[i, j] at "ctx<j>", padding after."""
    length = max(len(r) for r in rows)
    out = []
    for i, row in enumerate(rows):
        ids = [0 if isinstance(t, str) else t for t in row] + [0] * (length - len(row))  # 0: open_clip's pad id
        with torch.no_grad():
            emb = model.text.embed_tokens(torch.tensor([ids]))[0].clone()  # (L, W)
        for pos, t in enumerate(row):
            if isinstance(t, str):
                emb[pos] = ctx[i, int(t[3:])]
        out.append(emb)
    return torch.stack(out)


@pytest.mark.parametrize("position,place", [("end", place_end), ("middle", place_middle), ("front", place_front)])
def test_placement_by_hand(tiny_model, position, place):
    prompts = PromptTokens(tiny_model, NAMES, N_CTX)
    ctx = torch.randn(len(NAMES), N_CTX, tiny_model.text.width, generator=torch.Generator().manual_seed(0))
    rows = _layout(tiny_model, position, N_CTX)
    assert placement(position) is place
    with torch.no_grad():
        got = place(prompts, ctx)
    assert got.shape == (len(NAMES), max(len(r) for r in rows), tiny_model.text.width)  # cut after the longest
    assert torch.equal(got, _expected(tiny_model, rows, ctx))


def test_prompt_tokens_are_the_written_prompts(tiny_model):
    prompts = PromptTokens(tiny_model, NAMES, N_CTX)
    rows = _layout(tiny_model, "end", N_CTX)
    x = _ids(tiny_model, "X")[0]
    length = max(len(r) for r in rows)
    ids = torch.tensor([[x if isinstance(t, str) else t for t in r] + [0] * (length - len(r)) for r in rows])
    assert torch.equal(prompts.input_ids, ids)
    assert prompts.start == 1 and prompts.n_ctx == N_CTX and prompts.name_lens == [2, 1, 3]


class _StubTokenizer:
    """A model whose tokenizer puts ``n_start`` start tokens before the text (0: none, as SigLIP)."""

    def __init__(self, n_start):
        self.n_start = n_start

    def tokenize(self, texts):
        rows = [[101] * self.n_start + [7] * len(t.split()) + [102] for t in texts]
        ids = torch.tensor([r + [0] * (8 - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_prompt_start_is_the_first_text_position(tiny_model):
    sos = tiny_model.tokenize([""])["input_ids"][0, 0]
    assert tiny_model.tokenize(["X"])["input_ids"][0, 0] == sos  # CLIP: one start token, then the text
    assert prompt_start(tiny_model) == 1
    for n_start in (0, 1, 2):
        assert prompt_start(_StubTokenizer(n_start)) == n_start


def test_init_context_from_a_phrase_is_its_token_embeddings(tiny_model):
    phrase = "a photograph of"
    ids = _ids(tiny_model, phrase)
    with torch.no_grad():
        emb = tiny_model.text.embed_tokens(torch.tensor([ids]))[0]  # (n_tokens, W)
    init, prefix, n = init_context(tiny_model, 0, phrase)
    assert n == len(ids) == 3 and prefix == phrase
    assert torch.equal(init, emb)
    init2, prefix2, n2 = init_context(tiny_model, 2, phrase)  # MaPLe: the first n_ctx tokens
    assert n2 == 2 and prefix2 == phrase and torch.equal(init2, emb[:2])


def test_init_context_random_is_small_and_the_count_is_checked(tiny_model):
    torch.manual_seed(0)
    init, prefix, n = init_context(tiny_model, 16, "")
    assert prefix is None and n == 16 and init.shape == (16, tiny_model.text.width)
    assert 0.017 < float(init.std()) < 0.023  # CoOp: normal, std 0.02 (1024 draws)
    with pytest.raises(UserError, match="n_ctx must be at least 1"):
        init_context(tiny_model, 0, "")
    with pytest.raises(UserError, match="gives no tokens"):
        init_context(tiny_model, 0, " ")


@pytest.mark.parametrize("deep", [False, True])
def test_encode_prompts_chunked_equals_whole_and_full_length(tiny_model, deep):
    names = [f"class {w}" for w in ("zero", "one", "sea lion", "two", "hot dog stand", "three", "four")]
    prompts = PromptTokens(tiny_model, names, 4)
    g = torch.Generator().manual_seed(1)
    ctx = torch.randn(4, tiny_model.text.width, generator=g).expand(len(names), -1, -1)
    deep_prompts = {1: torch.randn(4, tiny_model.text.width, generator=g)} if deep else None
    with torch.no_grad():
        embeds = place_end(prompts, ctx)
        whole = encode_prompts(tiny_model, embeds, prompts.tokens(), deep_prompts, start=1)
        chunked = encode_prompts(tiny_model, embeds, prompts.tokens(), deep_prompts, start=1, chunk=3)
        # the same prompts at the tokenizer's full length: cutting the padding changes nothing
        full = tiny_model.tokenize([f"X X X X {n}." for n in names])
        full_embeds = tiny_model.text.embed_tokens(full["input_ids"])
        full_embeds[:, 1:5] = ctx
        pooled = tiny_model.text.forward_embeddings(full_embeds, full, deep_prompts=deep_prompts, prompt_start=1)
        reference = tiny_model.project_text(pooled)
    assert whole.shape == (len(names), tiny_model.embed_dim)
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert torch.allclose(whole, reference, atol=1e-5)


def test_csc_random_context_is_drawn_per_class(tiny_model):
    """CoOp (trainers/coop.py, random init with CSC): an (n_cls, n_ctx, W) tensor, normal std 0.02."""
    from vlkit import adapt

    torch.manual_seed(0)
    csc = adapt.build_method("coop_csc", tiny_model, NAMES, None, {"n_ctx": 4})
    ctx = csc.context.ctx.detach()
    assert ctx.shape == (len(NAMES), 4, tiny_model.text.width)
    assert 0.017 < float(ctx.std()) < 0.023
    assert not torch.equal(ctx[0], ctx[1]) and not torch.equal(ctx[1], ctx[2])
