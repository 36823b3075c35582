import math

import numpy as np
import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.base import split_indices
from vlkit.evaluate.conformal import APS, LAC, RAPS, conformal_quantile, prediction_sets


@pytest.fixture(scope="module")
def known_model():
    """20k examples whose labels are drawn from the softmax the model reports."""
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(20000, 10, generator=g)
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def run(logits, labels, **options):
    ctx = EvalContext.from_arrays(logits=logits, labels=labels, seed=0)
    return EVALUATORS.get("conformal").from_options(options)(ctx)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_coverage_holds_for_lac_aps_raps(known_model, alpha):
    result = run(*known_model, alpha=alpha)
    for score in ("lac", "aps", "raps"):
        assert result[f"{score}_coverage"] >= 1 - alpha - 0.01, score
        assert result[f"{score}_coverage"] <= 1 - alpha + 0.02, score  # and not trivially everything
        assert 0 <= result[f"{score}_class_coverage_min"] <= result[f"{score}_class_coverage_mean"] <= 1


def test_set_size_decreases_with_alpha(known_model):
    curves = run(*known_model).artifacts["curves"]
    for score, curve in curves.items():
        sizes = curve["set_size"]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), (score, sizes)


def test_non_randomized_aps_over_covers(known_model):
    result = run(*known_model, alpha=0.1, randomized=False, scores=["aps"])
    assert result["aps_coverage"] >= 0.9


def test_scores_by_hand():
    probs = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
    u = torch.zeros(1, dtype=torch.float64)
    torch.testing.assert_close(LAC().scores(probs, u), torch.tensor([[0.5, 0.8, 0.7]], dtype=torch.float64))
    torch.testing.assert_close(APS(randomized=False).scores(probs, u), torch.tensor([[0.5, 1.0, 0.8]], dtype=torch.float64))
    raps = RAPS(randomized=False, lam=0.1, k_reg=1).scores(probs, u)  # ranks 1, 3, 2
    torch.testing.assert_close(raps, torch.tensor([[0.5, 1.2, 0.9]], dtype=torch.float64))
    randomized = APS(randomized=True).scores(probs, torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(randomized, torch.tensor([[0.0, 0.8, 0.5]], dtype=torch.float64))


def test_quantile_is_the_k_th_smallest_score_by_hand():
    # n = 9 scores in shuffled order; alpha = 0.2 -> k = ceil(10 * 0.8) = 8 -> 8th smallest = 0.8
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6], dtype=torch.float64)
    assert conformal_quantile(scores, 0.2) == 0.8
    assert conformal_quantile(scores, 0.3) == 0.7  # k = ceil(10 * 0.7) = 7, though 10 * (1 - 0.3) > 7 in floats
    assert conformal_quantile(scores, 0.5) == 0.5  # k = ceil(10 * 0.5) = 5
    assert conformal_quantile(scores, 0.15) == 0.9  # k = ceil(8.5) = 9 = n: the largest score
    assert conformal_quantile(scores, 0.05) == math.inf  # k = ceil(9.5) = 10 > n: every class in the set
    assert conformal_quantile(scores, 0.1) == 0.9  # k = ceil(9.0) = 9, exactly n


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.2, 0.3, 0.37, 0.5, 0.9])
def test_quantile_matches_numpy_inverted_cdf(alpha):
    scores = torch.rand(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = math.ceil(round(51 * (1 - alpha), 9))
    expected = np.quantile(scores.numpy(), k / 50, method="inverted_cdf") if k <= 50 else math.inf
    assert conformal_quantile(scores, alpha) == expected


def test_prediction_sets_use_the_k_th_smallest_calibration_score():
    """LAC by hand: 9 calibration examples whose true-class score 1 - p_y is 0.1 .. 0.9."""
    p_true = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    cal = torch.stack([p_true, 1 - p_true], dim=1)  # (9, 2), true class 0
    test = torch.tensor([[0.25, 0.75], [0.15, 0.85], [0.5, 0.5]], dtype=torch.float64)
    lac = LAC()
    sets, q_hat = prediction_sets(lac.scores(cal, None), torch.zeros(9, dtype=torch.long), lac.scores(test, None), 0.2)
    assert q_hat == pytest.approx(0.8)  # 8th smallest of 0.1 .. 0.9: classes with p >= 0.2 are in
    assert sets.tolist() == [[True, True], [False, True], [True, True]]

@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_unit_interval_is_a_user_error(alpha):
    with pytest.raises(UserError, match="outside"):
        run(torch.randn(20, 3), torch.randint(0, 3, (20,)), alpha=alpha)


def test_calibration_and_test_parts_are_disjoint_and_cover_everything():
    cal, test = split_indices(101, 0.5, seed=3)
    assert set(cal.tolist()).isdisjoint(test.tolist())
    assert sorted(cal.tolist() + test.tolist()) == list(range(101))
    again, _ = split_indices(101, 0.5, seed=3)
    assert torch.equal(cal, again)


def test_unknown_score_is_a_user_error():
    with pytest.raises(UserError, match="unknown conformal score"):
        run(torch.randn(20, 3), torch.randint(0, 3, (20,)), scores=["thr"])
