"""Retrieval ranks computed in query x gallery blocks equal the ranks of the full score matrix.

Issue 16 (scale): ranking in query chunks held chunk x gallery scores (1.75 GB at 20,000
images). The blocked ranking must give the same ranks, ties counted against the query exactly
as :func:`best_positive_rank` counts them on the whole matrix, for any block size.
"""

from __future__ import annotations

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.retrieval import (
    best_positive_rank,
    blocked_best_positive_rank,
    rank_metrics,
    retrieval_metrics,
    retrieval_ranks,
)

BLOCKS = [1, 2, 3, 7, 16, 40, 41, 1000]  # most divide neither 23 images nor 41 texts


def tied_gallery(seed: int, n_images: int = 23, n_texts: int = 41, dim: int = 3):
    """Features with small integer entries: many exact ties (equal scores, duplicate vectors),
    every product exact in float32, so a tie is a tie whatever the block shape. Some images
    have no caption (their image query has no positive), some have several."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(-1, 2, (n_images, dim), generator=g).float()
    texts = torch.randint(-1, 2, (n_texts, dim), generator=g).float()
    owner = torch.randint(0, n_images - 3, (n_texts,), generator=g)  # the last 3 images: no caption
    return images, texts, owner


def full_matrix_ranks(images, texts, owner):
    """The definition: one score matrix per direction, no chunking at all."""
    image_ids = torch.arange(len(images))
    text_ranks = best_positive_rank(texts @ images.T, owner[:, None] == image_ids[None, :])
    image_ranks = best_positive_rank(images @ texts.T, image_ids[:, None] == owner[None, :])
    return text_ranks, image_ranks


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block", BLOCKS)
def test_blocked_ranks_equal_full_matrix_ranks_with_ties(seed, block):
    images, texts, owner = tied_gallery(seed)
    want_text, want_image = full_matrix_ranks(images, texts, owner)
    got_text, got_image = retrieval_ranks(images, texts, owner, chunk_size=block)
    assert torch.equal(got_text, want_text) and torch.equal(got_image, want_image)
    # the data really has ties between a positive and a negative, and captionless images
    scores = texts @ images.T
    positive = scores.gather(1, owner[:, None])
    assert ((scores == positive).sum(dim=1) > 1).any()
    assert (want_image[-3:] == 0).all() and (want_image[:-3] > 0).any()


@pytest.mark.parametrize("block", [1, 5, 64, 1024])
def test_blocked_metrics_equal_unblocked_on_random_features(block):
    g = torch.Generator().manual_seed(11)
    images = torch.nn.functional.normalize(torch.randn(130, 16, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(250, 16, generator=g), dim=-1)
    owner = torch.randint(0, 130, (250,), generator=g)
    want_text, want_image = full_matrix_ranks(images, texts, owner)
    want = {**rank_metrics(want_text, "image_retrieval"), **rank_metrics(want_image, "text_retrieval")}
    assert retrieval_metrics(images, texts, owner, chunk_size=block) == want


def test_all_equal_scores_rank_last_in_every_block_layout():
    # every score ties: the positive ranks behind every negative, however the blocks fall
    ranks = blocked_best_positive_rank(torch.ones(5, 2), torch.ones(9, 2), torch.arange(5), torch.arange(9) % 5, 2)
    assert ranks.tolist() == [8, 8, 8, 8, 9]  # query i < 4 has 2 positives (7 negatives), query 4 one


def test_a_positive_in_a_late_block_is_found():
    # query 0's only positive is the last gallery item, in the last (partial) block
    gallery = torch.eye(7)
    query = gallery[[6, 0]]  # (2, 7)
    ranks = blocked_best_positive_rank(query, gallery, torch.tensor([6, 0]), torch.arange(7), block_size=3)
    assert ranks.tolist() == [1, 1]
    worse = blocked_best_positive_rank(query, gallery, torch.tensor([5, 2]), torch.arange(7), block_size=3)
    # positive scores 0; the 6 negatives score 1 (the query's own item) or 0 (ties): all count
    assert worse.tolist() == [7, 7]


def test_chunk_size_option_reaches_the_ranking_and_is_checked(lookup_encoder):
    table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}
    ctx = EvalContext.from_arrays(image_features=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                                  captions=[["a"], ["b"], ["c"]], encode_text=lookup_encoder(table))
    small = EVALUATORS.get("retrieval").from_options({"chunk_size": 2})(ctx)
    large = EVALUATORS.get("retrieval").from_options({})(ctx)
    assert dict(small) == dict(large) and small["image_retrieval_recall@1"] == 1.0
    with pytest.raises(UserError, match="chunk_size"):
        EVALUATORS.get("retrieval").from_options({"chunk_size": 0})(ctx)
