"""Image-text retrieval with any number of captions per image, as CLIP_benchmark scores it.

Metric semantics from LAION-AI/CLIP_benchmark (``zeroshot_retrieval``): every caption of an
image is a positive for it; a query is a hit at k when *any* of its positives is in the top k
(counting each image's captions separately roughly halves the numbers, its issue #7).

- ``image_retrieval_recall@k``: text queries retrieving images (one positive each);
- ``text_retrieval_recall@k``: image queries retrieving texts (any of its captions counts);
- ``*_mrr`` and ``*_median_rank`` both ways, from the rank of the best-ranked positive.

Deviations, both documented here: ranks count ties *against* the query (rank = 1 + number of
negatives scoring at least as high as the best positive), so a model that scores everything
equally gets no credit, where ``topk`` would break ties arbitrarily; and MRR/median rank are
additions (CLIP_benchmark reports recall only).

Scores are computed in blocks of ``chunk_size`` queries x ``chunk_size`` gallery items, so the
ranking's memory is O(chunk_size^2) whatever the gallery size (a query-only chunking holds
chunk x gallery scores and their masks, growing with the gallery: 5.5 GB at 200,000 images of
2 captions, against about 50 MB blocked; ``benchmarks/eval_memory.py`` measures both). Each query block takes two passes over
the gallery blocks: the first finds the best positive score (only blocks holding a positive of
the block's queries), the second counts the negatives scoring at least as high. Both passes
compute every score with the same block product, so the ranks are those of
:func:`best_positive_rank` on the full score matrix, ties included, for any block size.

Option ``captions=first`` keeps only each image's first caption: one query per image both
ways. On OpenMoji the first caption is the emoji's name, so this is name <-> image retrieval;
with ``skin_tones: false`` data (one image per base emoji) it is the moji-lit recipe's
measure of transfer to unseen concepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import UserError
from .base import EVALUATORS, EvalResult, Evaluator


def flatten_captions(captions: list[list[str]]) -> tuple[list[str], torch.Tensor]:
    """All captions as one list and, for each, the index of its image: (n_texts,) long."""
    texts = [c for caps in captions for c in caps]
    owner = [i for i, caps in enumerate(captions) for _ in caps]
    return texts, torch.tensor(owner, dtype=torch.long)


def best_positive_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """(Q,) 1-based rank of each query's best positive; ties with negatives count against it.

    scores, positive: (Q, M). A query without positives gets rank 0 (filtered by the caller).
    """
    best = scores.masked_fill(~positive, -math.inf).max(dim=1).values  # (Q,)
    beaten = ((scores >= best[:, None]) & ~positive).sum(dim=1)  # (Q,)
    return torch.where(positive.any(dim=1), beaten + 1, torch.zeros_like(beaten))


def blocked_best_positive_rank(
    queries: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor,
    block_size: int = 1024,
) -> torch.Tensor:
    """(Q,) :func:`best_positive_rank` of ``queries @ gallery.T`` where gallery item j is a
    positive of query i iff ``gallery_ids[j] == query_ids[i]``, computed block by block.

    queries: (Q, D), gallery: (M, D), query_ids: (Q,), gallery_ids: (M,). Memory: a few
    (block_size, block_size) arrays, never (Q, M) nor (block_size, M).
    """
    n_gallery = len(gallery)
    starts = range(0, n_gallery, block_size)
    ranks = []
    for q0 in range(0, len(queries), block_size):
        q, ids = queries[q0 : q0 + block_size], query_ids[q0 : q0 + block_size]  # (b, D), (b,)

        def block(g0: int) -> tuple[torch.Tensor, torch.Tensor]:
            scores = q @ gallery[g0 : g0 + block_size].T  # (b, g)
            return scores, ids[:, None] == gallery_ids[None, g0 : g0 + block_size]  # (b, g) positive

        # pass 1: best positive score, only over the gallery blocks holding a positive
        holds = torch.isin(gallery_ids, ids)  # (M,)
        with_positive = [g0 for g0 in starts if bool(holds[g0 : g0 + block_size].any())]
        best = torch.full((len(q),), -math.inf, dtype=queries.dtype)  # (b,)
        has_positive = torch.zeros(len(q), dtype=torch.bool)
        for g0 in with_positive:
            scores, positive = block(g0)
            best = torch.maximum(best, scores.masked_fill(~positive, -math.inf).amax(dim=1))
            has_positive |= positive.any(dim=1)
        # pass 2: negatives scoring at least as high as the best positive (ties count against)
        beaten = torch.zeros(len(q), dtype=torch.long)
        for g0 in starts:
            scores, positive = block(g0)
            beaten += ((scores >= best[:, None]) & ~positive).sum(dim=1)
        ranks.append(torch.where(has_positive, beaten + 1, torch.zeros_like(beaten)))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def retrieval_ranks(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of text queries (among images) and of image queries (among texts), in blocks of
    ``chunk_size`` queries x ``chunk_size`` gallery items."""
    image_ids = torch.arange(len(image_features))
    text_ranks = blocked_best_positive_rank(text_features, image_features, text_to_image, image_ids, chunk_size)
    image_ranks = blocked_best_positive_rank(image_features, text_features, image_ids, text_to_image, chunk_size)
    return text_ranks, image_ranks


def rank_metrics(ranks: torch.Tensor, prefix: str, ks=(1, 5, 10)) -> dict[str, float]:
    """recall@k (fraction of queries with a hit in the top k), MRR and median rank."""
    ranks = ranks[ranks > 0].double()  # queries without positives do not count
    out = {f"{prefix}_recall@{k}": (ranks <= k).double().mean().item() for k in ks}
    out[f"{prefix}_mrr"] = (1.0 / ranks).mean().item()
    out[f"{prefix}_median_rank"] = float(np.median(ranks.numpy()))
    return out


def retrieval_metrics(image_features, text_features, text_to_image, ks=(1, 5, 10), chunk_size=1024) -> dict:
    """The full metric dict for one gallery (both directions)."""
    text_ranks, image_ranks = retrieval_ranks(image_features, text_features, text_to_image, chunk_size)
    return {**rank_metrics(text_ranks, "image_retrieval", ks), **rank_metrics(image_ranks, "text_retrieval", ks)}


def retrieval_chance(text_to_image: torch.Tensor, n_images: int, ks=(1, 5, 10)) -> dict[str, float]:
    """Expected metrics of random scores (exact for recall and the image-side MRR)."""
    n_texts = len(text_to_image)
    positives = torch.bincount(text_to_image, minlength=n_images).double()
    positives = positives[positives > 0]
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = min(k, n_images) / n_images
        miss = torch.ones_like(positives)  # P(no positive among k random texts), per image
        for j in range(min(k, n_texts)):
            miss = miss * ((n_texts - positives - j).clamp(min=0) / (n_texts - j))
        out[f"text_retrieval_recall@{k}"] = (1 - miss).mean().item()
    out["image_retrieval_mrr"] = sum(1.0 / r for r in range(1, n_images + 1)) / n_images
    out["image_retrieval_median_rank"] = (n_images + 1) / 2
    return out


def top_retrieved(image_features, text_features, queries: list[int], k: int = 5) -> list[dict]:
    """Top-k image indices (and scores) for a few text queries: an artifact for the report."""
    if not queries:
        return []
    scores = text_features[queries] @ image_features.T  # (q, n_images)
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return [
        {"query_index": q, "top_images": top.indices[i].tolist(), "top_scores": top.values[i].tolist()}
        for i, q in enumerate(queries)
    ]


@dataclass
class RetrievalConfig:
    split: str = "test"
    ks: list[int] | None = None  # recall@k cut-offs; default 1, 5, 10
    chunk_size: int = 1024  # block side: queries x gallery items scored at once (memory: chunk^2)
    n_examples: int = 5  # text queries whose top-5 images are kept for the report
    captions: Literal["all", "first"] = "all"  # every caption of an image, or only its first (its name)


@EVALUATORS.register("retrieval")
class Retrieval(Evaluator):
    """Text-to-image and image-to-text recall@k, MRR and median rank."""

    name = "retrieval"
    Config = RetrievalConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg, split = self.config, self.config.split
        ks = tuple(cfg.ks or (1, 5, 10))
        if cfg.chunk_size < 1 or any(k < 1 for k in ks):
            raise UserError("retrieval: chunk_size and every k must be positive integers; e.g. ks=[1,5,10]")
        captions = ctx.captions(split)
        if cfg.captions == "first":
            captions = [caps[:1] for caps in captions]
        texts, owner = flatten_captions(captions)
        if not texts:
            raise UserError(f"retrieval: split {split!r} has no captions; retrieval needs image-caption pairs")
        images = ctx.image_features(split)  # (n_images, D)
        text_feats = ctx.encode_text(texts)  # (n_texts, D)
        metrics = retrieval_metrics(images, text_feats, owner, ks, cfg.chunk_size)
        picks = np.linspace(0, len(texts) - 1, num=min(cfg.n_examples, len(texts))).round().astype(int)
        examples = top_retrieved(images, text_feats, sorted(set(picks.tolist())))
        for ex in examples:
            ex.update(query=texts[ex["query_index"]], positive_image=int(owner[ex["query_index"]]))
        return EvalResult(
            metrics,
            artifacts={"examples": examples, "n_images": len(images), "n_texts": len(texts), "split": split,
                       "captions": cfg.captions},
            chance=retrieval_chance(owner, len(images), ks),
        )
