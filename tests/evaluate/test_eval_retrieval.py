import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.retrieval import retrieval_metrics

# texts x images scores; text i belongs to image i
S = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.6, 0.7], [0.2, 0.95, 0.3]])


def test_mrr_and_median_rank_on_a_3x3_case():
    # text queries: ranks 1, 3, 2; image queries (columns): ranks 1, 2, 2
    m = retrieval_metrics(torch.eye(3), S, torch.arange(3))
    assert m["image_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["image_retrieval_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert m["image_retrieval_median_rank"] == 2
    assert m["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert m["text_retrieval_mrr"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert m["text_retrieval_median_rank"] == 2
    assert m["image_retrieval_recall@5"] == 1.0


def test_an_image_with_two_captions_is_a_hit_when_either_is_first():
    images = torch.eye(2)
    # image 0 has captions t0 (3rd for image 0: 0.1 < 0.5 < 0.9) and t1 (1st); image 1 has t2
    texts = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 1.0]])
    m = retrieval_metrics(images, texts, torch.tensor([0, 0, 1]))
    assert m["text_retrieval_recall@1"] == 1.0
    assert m["text_retrieval_mrr"] == 1.0
    # without t1, image 0's only caption ranks below t2: a miss at 1
    alone = retrieval_metrics(images, texts[[0, 2]], torch.tensor([0, 1]))
    assert alone["text_retrieval_recall@1"] == 0.5


def test_ties_count_against_the_query():
    # every score equal: nothing is retrieved at rank 1
    m = retrieval_metrics(torch.ones(3, 2), torch.ones(3, 2), torch.arange(3))
    assert m["image_retrieval_recall@1"] == 0.0
    assert m["image_retrieval_median_rank"] == 3


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(30, 8, generator=g), torch.randn(55, 8, generator=g)
    owner = torch.randint(0, 30, (55,), generator=g)
    assert retrieval_metrics(images, texts, owner, chunk_size=7) == retrieval_metrics(images, texts, owner, chunk_size=1000)


def test_evaluator_reports_examples_and_chance(lookup_encoder):
    table = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "b2": [0.0, 0.9, 0.1], "c": [0.0, 0.0, 1.0]}
    ctx = EvalContext.from_arrays(image_features=torch.eye(3), captions=[["a"], ["b", "b2"], ["c"]],
                                  encode_text=lookup_encoder(table))
    result = EVALUATORS.get("retrieval").from_options({"n_examples": 2})(ctx)
    assert result["image_retrieval_recall@1"] == 1.0 and result["text_retrieval_recall@1"] == 1.0
    assert result.chance["image_retrieval_recall@1"] == pytest.approx(1 / 3)
    ex = result.artifacts["examples"]
    assert len(ex) == 2 and ex[0]["top_images"][0] == ex[0]["positive_image"]
    assert len(ex[0]["top_images"]) == 3  # top-5 capped by the gallery size


def test_empty_split_is_a_user_error(lookup_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.zeros(0, 3), captions=[], encode_text=lookup_encoder({}))
    with ctx.for_suite("retrieval"), pytest.raises(UserError, match="empty"):
        EVALUATORS.get("retrieval")()(ctx)


def test_missing_text_encoder_is_a_user_error():
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), captions=[["a"], ["b"]])
    with ctx.for_suite("retrieval"), pytest.raises(UserError, match="no text tower"):
        EVALUATORS.get("retrieval")()(ctx)


def test_first_caption_only_scores_each_image_by_its_name(lookup_encoder):
    # image 1's alias "b2" points at image 2: with every caption it is a miss for the alias
    # query; with captions=first only the names are queries and every one is a hit
    table = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "b2": [0.0, 0.1, 0.9], "c": [0.0, 0.0, 1.0]}
    ctx = EvalContext.from_arrays(image_features=torch.eye(3), captions=[["a"], ["b", "b2"], ["c"]],
                                  encode_text=lookup_encoder(table))
    every = EVALUATORS.get("retrieval")()(ctx)
    first = EVALUATORS.get("retrieval").from_options({"captions": "first"})(ctx)
    assert every["image_retrieval_recall@1"] == pytest.approx(3 / 4)
    assert first["image_retrieval_recall@1"] == 1.0
    assert first.artifacts["n_texts"] == 3 and first.artifacts["captions"] == "first"
    with pytest.raises(UserError, match="captions"):
        EVALUATORS.get("retrieval").from_options({"captions": "some"})
