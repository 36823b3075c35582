"""Prompt-learning pieces shared by CoOp, CoCoOp, KgCoOp, MaPLe and PromptSRC.

A prompt is ``"<prefix> <classname>."`` tokenised by the model's own tokenizer; the ``n_ctx``
token embeddings right after the start token(s) are replaced by learned context vectors
(CoOp, "Learning to Prompt for Vision-Language Models", arXiv 2109.01134). The prefix is
either ``n_ctx`` placeholder words (random init, std 0.02) or an init phrase such as
"a photo of a", whose own token embeddings initialise the context. Everything is read from the
model: token embeddings (``text.embed_tokens``), the start position (found by comparing two
tokenisations, so tokenizers with or without a BOS token both work) and the width.

Prompts are cut after the longest valid token sequence (EOT included), which is exact for
towers that pool the EOT/EOS token under a causal mask or mean-pool under a padding mask, and
saves most of CLIP's 77 positions; towers that pool the *last* position (SigLIP) keep their
full length.

Context strategies (a unified context or one per class, CoOp's CSC) and class-token
placements (end, middle, front) are small objects picked once, not flags inside a forward.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, unknown_name

PLACEHOLDER = "X"


def _valid_lengths(model, texts: Sequence[str]) -> torch.Tensor:
    return model.tokenize(list(texts))["attention_mask"].sum(dim=1)


def prompt_start(model) -> int:
    """Index of the first text token (after BOS/CLS tokens): where the context goes."""
    ids = model.tokenize(["", PLACEHOLDER])["input_ids"]
    differ = (ids[0] != ids[1]).nonzero()
    return int(differ[0]) if len(differ) else 0


def phrase_embeddings(model, phrase: str) -> torch.Tensor:
    """(n_tokens, W) token embeddings of ``phrase`` (without start/end tokens)."""
    start = prompt_start(model)
    n = int(_valid_lengths(model, [phrase])[0] - _valid_lengths(model, [""])[0])
    if n < 1:
        raise UserError(f"the init phrase {phrase!r} gives no tokens; give words, e.g. ctx_init='a photo of a'")
    tok = model.tokenize([phrase])
    with torch.no_grad():
        emb = model.text.embed_tokens(tok["input_ids"].to(model.device))  # (1, L, W)
    return emb[0, start:start + n].detach().float().cpu().clone()


class PromptTokens(nn.Module):
    """Tokenised ``"<prefix> <name>."`` for each class, with frozen embeddings (non-persistent buffers)."""

    def __init__(self, model, classnames: Sequence[str], n_ctx: int, prefix: str | None = None):
        super().__init__()
        prefix = prefix if prefix else " ".join([PLACEHOLDER] * n_ctx)
        n_prefix = int(_valid_lengths(model, [prefix])[0] - _valid_lengths(model, [""])[0])
        if n_prefix < n_ctx or (prefix.split() == [PLACEHOLDER] * n_ctx and n_prefix != n_ctx):
            raise UserError(f"the prompt prefix {prefix!r} gives {n_prefix} tokens, fewer than n_ctx={n_ctx}; "
                            "use a longer init phrase or a smaller n_ctx")
        tok = model.tokenize([f"{prefix} {name}." for name in classnames])
        ids, mask = tok["input_ids"], tok["attention_mask"]
        if "last" not in str(getattr(model.text, "pooling", "")):
            keep = int(mask.sum(dim=1).max())
            ids, mask = ids[:, :keep], mask[:, :keep]  # (n_cls, L): drop padding nobody attends to
        self.start, self.n_ctx = prompt_start(model), int(n_ctx)
        # name tokens sit after the whole prefix, which may be longer than the context (MaPLe)
        self.name_start = self.start + n_prefix
        self.name_lens = (_valid_lengths(model, classnames) - _valid_lengths(model, [""])[0]).tolist()
        with torch.no_grad():
            embeds = model.text.embed_tokens(ids.to(model.device)).detach()  # (n_cls, L, W)
        self.register_buffer("embeds", embeds, persistent=False)
        self.register_buffer("input_ids", ids.to(model.device), persistent=False)
        self.register_buffer("attention_mask", mask.to(model.device), persistent=False)

    def tokens(self, repeat: int = 1) -> dict[str, torch.Tensor]:
        ids, mask = self.input_ids, self.attention_mask
        if repeat > 1:
            ids, mask = ids.repeat(repeat, 1), mask.repeat(repeat, 1)  # (repeat * n_cls, L)
        return {"input_ids": ids, "attention_mask": mask}


# -- context strategies ----------------------------------------------------------------------
class UnifiedContext(nn.Module):
    """One context (n_ctx, W) shared by every class (CoOp's default)."""

    def __init__(self, init: torch.Tensor, n_cls: int):
        super().__init__()
        if init.dim() != 2:
            raise ValueError(f"a unified context init is (n_ctx, W), got {tuple(init.shape)}")
        self.ctx = nn.Parameter(init.clone())  # (n_ctx, W)

    def forward(self, n_cls: int) -> torch.Tensor:
        return self.ctx.unsqueeze(0).expand(n_cls, -1, -1)  # (n_cls, n_ctx, W)


class ClassContext(nn.Module):
    """A context per class (n_cls, n_ctx, W): CoOp's class-specific context (CSC).

    ``init`` is (n_cls, n_ctx, W) (CoOp's independent random draw per class) or (n_ctx, W)
    (a phrase's embeddings, copied to every class).
    """

    def __init__(self, init: torch.Tensor, n_cls: int):
        super().__init__()
        if init.dim() == 2:
            init = init.unsqueeze(0).repeat(n_cls, 1, 1)
        if init.shape[0] != n_cls:
            raise ValueError(f"class context init has {init.shape[0]} rows for {n_cls} classes")
        self.ctx = nn.Parameter(init.clone())  # (n_cls, n_ctx, W)

    def forward(self, n_cls: int) -> torch.Tensor:
        return self.ctx


def init_context(model, n_ctx: int, ctx_init: str, n_cls: int | None = None) -> tuple[torch.Tensor, str | None, int]:
    """(initial context, prompt prefix or None, n_ctx). With a phrase, CoOp's rule: n_ctx becomes
    the phrase's token count unless a smaller n_ctx is asked (MaPLe: first n_ctx), and the context
    is the phrase's embeddings (n_ctx, W). Without one it is drawn from N(0, 0.02^2): (n_ctx, W),
    or (n_cls, n_ctx, W) when ``n_cls`` is given (CoOp's class-specific context: one draw per class)."""
    if ctx_init:
        emb = phrase_embeddings(model, ctx_init)
        n = emb.shape[0] if n_ctx <= 0 else min(n_ctx, emb.shape[0])
        return emb[:n], ctx_init, n
    if n_ctx < 1:
        raise UserError(f"n_ctx must be at least 1 without an init phrase, got {n_ctx}")
    shape = (n_ctx, model.text.width) if n_cls is None else (n_cls, n_ctx, model.text.width)
    return torch.randn(*shape) * 0.02, None, n_ctx


# -- class-token placements --------------------------------------------------------------------
def place_end(prompts: PromptTokens, ctx: torch.Tensor, embeds: torch.Tensor | None = None) -> torch.Tensor:
    """[start tokens][ctx][rest of the prefix][name][.][EOT]: ctx (..., n_cls, n_ctx, W) -> (..., n_cls, L, W)."""
    e = prompts.embeds if embeds is None else embeds
    e = e.expand(*ctx.shape[:-2], -1, -1)
    s, n = prompts.start, prompts.n_ctx
    return torch.cat([e[..., :s, :], ctx.to(e.dtype), e[..., s + n:, :]], dim=-2)


def _per_class(prompts: PromptTokens, ctx: torch.Tensor, middle: bool) -> torch.Tensor:
    e, s, n, at = prompts.embeds, prompts.start, prompts.n_ctx, prompts.name_start
    if at - s != n:
        raise UserError("class_token_position middle/front needs the whole prefix learned; "
                        "leave n_ctx at its default with ctx_init, or use class_token_position=end")
    half = n // 2
    rows = []
    for i, length in enumerate(prompts.name_lens):
        name = e[i, at:at + length]
        head, tail = e[i, :s], e[i, at + length:]
        c = ctx[i].to(e.dtype)
        parts = [head, c[:half], name, c[half:], tail] if middle else [head, name, c, tail]
        rows.append(torch.cat(parts, dim=0))  # (L, W)
    return torch.stack(rows)  # (n_cls, L, W)


def place_middle(prompts: PromptTokens, ctx: torch.Tensor, embeds=None) -> torch.Tensor:
    """[start][half ctx][name][half ctx][.][EOT] (CoOp's "middle")."""
    return _per_class(prompts, ctx, middle=True)


def place_front(prompts: PromptTokens, ctx: torch.Tensor, embeds=None) -> torch.Tensor:
    """[start][name][ctx][.][EOT] (CoOp's "front")."""
    return _per_class(prompts, ctx, middle=False)


PLACEMENTS = {"end": place_end, "middle": place_middle, "front": place_front}


def placement(name: str):
    if name not in PLACEMENTS:
        raise unknown_name("class_token_position", name, PLACEMENTS)
    return PLACEMENTS[name]


def encode_prompts(model, embeds: torch.Tensor, tokens: dict, deep_prompts=None, start: int = 1,
                   chunk: int | None = None) -> torch.Tensor:
    """(N, L, W) prompt embeddings -> (N, D) normalised text features, ``chunk`` sequences per pass."""
    n = embeds.shape[0]
    step = n if not chunk or chunk >= n else int(chunk)
    out = []
    for i in range(0, n, step):
        part = {k: v[i:i + step] for k, v in tokens.items()}
        pooled = model.text.forward_embeddings(embeds[i:i + step], part, deep_prompts=deep_prompts, prompt_start=start)
        out.append(model.project_text(pooled))  # (n_i, D)
    return torch.cat(out) if len(out) > 1 else out[0]


def deep_text_features(model, prompts: PromptTokens, ctx: torch.Tensor, deep_text) -> torch.Tensor:
    """(n_cls, D) normalised features of prompts with a shared input context ``ctx`` (n_ctx, W) and
    deep prompts ``deep_text[i]`` (n_ctx, W) replacing it at the input of layer i + 1 (MaPLe, PromptSRC)."""
    n_cls = prompts.embeds.shape[0]
    embeds = place_end(prompts, ctx.unsqueeze(0).expand(n_cls, -1, -1))  # (n_cls, L, W)
    deep = {i + 1: p for i, p in enumerate(deep_text)}
    feats = encode_prompts(model, embeds, prompts.tokens(), deep_prompts=deep, start=prompts.start)
    return F.normalize(feats, dim=-1)
