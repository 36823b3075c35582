import math

import numpy as np
import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.base import split_indices
from vlkit.evaluate.conformal import (
    APS,
    LAC,
    RAPS,
    ConformalConfig,
    conformal_quantile,
    prediction_sets,
    set_metrics,
    split_conformal,
)


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
    test = torch.tensor([[0.25, 0.75], [0.15, 0.85], [0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    lac = LAC()
    sets, q_hat = prediction_sets(lac.scores(cal, None), torch.zeros(9, dtype=torch.long), lac.scores(test, None), 0.2)
    assert q_hat == pytest.approx(0.8)  # 8th smallest of 0.1 .. 0.9: classes with p >= 0.2 are in
    # the last row's class 0 scores exactly q_hat (1 - 0.2): s <= q_hat, so it is in the set
    assert sets.tolist() == [[True, True], [False, True], [True, True], [True, True]]

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


# Four calibration examples (true classes 2, 0, 1, 2) and three test examples, all by hand.
# n = 4, alpha = 0.4 -> k = ceil(5 * 0.6) = 3: q_hat is the 3rd smallest calibration score.
CAL_PROBS = torch.tensor(
    [[0.30, 0.26, 0.24, 0.20], [0.70, 0.10, 0.15, 0.05], [0.12, 0.60, 0.20, 0.08], [0.05, 0.10, 0.25, 0.60]],
    dtype=torch.float64,
)
CAL_LABELS = torch.tensor([2, 0, 1, 2])  # ranks 3, 1, 1, 2; cumulative mass 0.80, 0.70, 0.60, 0.85
TEST_PROBS = torch.tensor(
    [[0.12, 0.50, 0.05, 0.33], [0.20, 0.34, 0.18, 0.28], [0.02, 0.03, 0.90, 0.05]], dtype=torch.float64
)  # rank order: classes 1, 3, 0, 2 (a 4-cycle, so a wrong permutation changes scores); 1, 3, 0, 2; 2, 3, 1, 0


@pytest.mark.parametrize(
    "score, q_hat, sets",
    [
        # cal scores 0.80, 0.70, 0.60, 0.85 -> q 0.80; test cum mass (0.50, 0.83, ..), (0.34, 0.62, ..), (0.90, ..)
        (APS(randomized=False), 0.80, [[1], [1, 3], []]),
        # u = 0.5 subtracts half of p_y: cal 0.68, 0.35, 0.30, 0.725 -> q 0.68;
        # test 1: 0.25, 0.665, 0.89 (class 0), 0.975; test 2: 0.17, 0.48, 0.72; test 3: 0.45, 0.925
        (APS(randomized=True), 0.68, [[1, 3], [1, 3], [2]]),
        # penalty 0.1 * max(rank - 1, 0) = 0, 0.1, 0.2, 0.3: cal 1.00, 0.70, 0.60, 0.95 -> q 0.95;
        # test 1: 0.50, 0.93, 1.15; test 2: 0.34, 0.72, 1.02; test 3: 0.90, 1.05
        (RAPS(randomized=False, lam=0.1, k_reg=1), 0.95, [[1, 3], [1, 3], [2]]),
        # penalty 0.1 * max(rank - 2, 0) = 0, 0, 0.1, 0.2: cal 0.90, 0.70, 0.60, 0.85 -> q 0.85;
        # test 1: 0.50, 0.83, 1.05; test 2: 0.34, 0.62, 0.92; test 3: 0.90
        (RAPS(randomized=False, lam=0.1, k_reg=2), 0.85, [[1, 3], [1, 3], []]),
        # randomized APS scores plus the k_reg = 1 penalty: cal 0.88, 0.35, 0.30, 0.825 -> q 0.825;
        # test 1: 0.25, 0.765, 1.09; test 2: 0.17, 0.58, 0.92; test 3: 0.45, 1.025
        (RAPS(randomized=True, lam=0.1, k_reg=1), 0.825, [[1, 3], [1, 3], [2]]),
    ],
    ids=["aps", "aps-randomized", "raps-k1", "raps-k2", "raps-randomized"],
)
def test_prediction_sets_by_hand(score, q_hat, sets):
    u_cal, u_test = torch.full((4,), 0.5, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    got, got_q = prediction_sets(score.scores(CAL_PROBS, u_cal), CAL_LABELS, score.scores(TEST_PROBS, u_test), 0.4)
    assert got_q == pytest.approx(q_hat)
    assert [torch.nonzero(row).squeeze(1).tolist() for row in got] == [sorted(s) for s in sets]
    sizes = [len(s) for s in sets]
    labels = torch.tensor([3, 0, 2])
    metrics = set_metrics(got, labels)
    assert metrics["set_size"] == pytest.approx(sum(sizes) / 3)
    covered = [float(int(label) in s) for label, s in zip(labels, sets)]
    assert metrics["coverage"] == pytest.approx(sum(covered) / 3)
    assert metrics["class_coverage_min"] == min(covered)  # one test example per class


def test_scores_map_back_through_a_four_cycle():
    """p = (0.12, 0.50, 0.05, 0.33): rank order 1, 3, 0, 2; cumulative 0.50, 0.83, 0.95, 1.00."""
    probs, u = TEST_PROBS[:1], torch.tensor([0.5], dtype=torch.float64)
    aps = APS(randomized=False).scores(probs, u)
    torch.testing.assert_close(aps, torch.tensor([[0.95, 0.50, 1.00, 0.83]], dtype=torch.float64))
    raps = RAPS(randomized=True, lam=0.2, k_reg=2).scores(probs, u)  # minus 0.5 p_y, plus 0.2 * max(rank - 2, 0)
    torch.testing.assert_close(raps, torch.tensor([[0.89 + 0.2, 0.25, 0.975 + 0.4, 0.665]], dtype=torch.float64))


def test_set_metrics_by_hand_with_unequal_classes():
    sets = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    labels = torch.tensor([0, 0, 2, 1, 1])  # covered: yes, no, yes, no, yes
    m = set_metrics(sets, labels)
    assert m["coverage"] == pytest.approx(3 / 5)
    assert m["set_size"] == pytest.approx((2 + 1 + 2 + 1 + 3) / 5)
    assert m["class_coverage_min"] == pytest.approx(0.5)  # classes 0 and 1: 1/2 each; class 2: 1/1
    assert m["class_coverage_mean"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)


def test_raps_defaults_match_the_suite_config():
    """Direct users of RAPS() get what `vlkit eval --suite conformal` uses: randomized, lambda 0.01, k_reg 1."""
    cfg, raps = ConformalConfig(), RAPS()
    assert (raps.randomized, raps.lam, raps.k_reg) == (cfg.randomized, cfg.lam, cfg.k_reg) == (True, 0.01, 1)
    assert APS().randomized is True


def test_split_conformal_is_seeded_and_calibrates_on_half_by_default():
    g = torch.Generator().manual_seed(5)
    probs = torch.randn(40, 4, generator=g, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, 4, (40,), generator=g)
    first = split_conformal(probs, labels, APS(randomized=True), 0.2, seed=3)
    assert split_conformal(probs, labels, APS(randomized=True), 0.2, seed=3) == first  # same U, same halves
    assert split_conformal(probs, labels, APS(randomized=True), 0.2, seed=3, cal_fraction=0.5) == first
    # by hand: q_hat is the ceil(21 * 0.8) = 17th smallest true-class score of the 20 calibration examples
    cal_idx, _ = split_indices(40, 0.5, 3)
    u = torch.rand(40, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cal_scores = APS(randomized=True).scores(probs, u)[cal_idx].gather(1, labels[cal_idx, None]).squeeze(1)
    assert first["qhat"] == cal_scores.sort().values[16].item()


@pytest.mark.parametrize("cal_fraction", [0.0, 1.0, 1.5, -0.5])
def test_cal_fraction_outside_unit_interval_is_a_user_error(cal_fraction):
    with pytest.raises(UserError, match=r"^conformal: cal_fraction must be in \(0, 1\); e\.g\. cal_fraction=0\.5$"):
        run(torch.randn(20, 3), torch.randint(0, 3, (20,)), cal_fraction=cal_fraction)


def test_too_few_samples_is_a_user_error():
    with pytest.raises(UserError, match=r"^conformal: split 'test' has 3 samples; use a split with at least 4$"):
        run(torch.randn(3, 3), torch.randint(0, 3, (3,)))


def test_evaluator_metrics_and_curves_by_name():
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(60, 5, generator=g), torch.randint(0, 5, (60,), generator=g)
    probs = logits.double().softmax(1)
    options = dict(alpha=0.2, scores=["lac", "raps"], lam=0.05, k_reg=2, randomized=False, cal_fraction=0.3)
    result = run(logits, labels, **options)
    for name, score in (("lac", LAC()), ("raps", RAPS(randomized=False, lam=0.05, k_reg=2))):
        expected = split_conformal(probs, labels, score, 0.2, seed=0, cal_fraction=0.3)
        assert {k: result[f"{name}_{k}"] for k in expected} == pytest.approx(expected)
        curve = result.artifacts["curves"][name]
        assert curve["alpha"] == [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
        at = [split_conformal(probs, labels, score, a, seed=0, cal_fraction=0.3) for a in curve["alpha"]]
        assert curve["coverage"] == [c["coverage"] for c in at] and curve["set_size"] == [c["set_size"] for c in at]
    assert result.artifacts["alpha"] == 0.2 and result.artifacts["target_coverage"] == pytest.approx(0.8)
    randomized = run(logits, labels, alpha=0.2, scores=["aps"])  # the default: randomized
    assert randomized["aps_qhat"] == split_conformal(probs, labels, APS(randomized=True), 0.2, seed=0)["qhat"]
    assert randomized["aps_qhat"] != split_conformal(probs, labels, APS(randomized=False), 0.2, seed=0)["qhat"]


def test_four_samples_are_enough():
    result = run(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), alpha=0.5, scores=["lac"])
    assert result["lac_qhat"] < math.inf  # k = ceil(3 * 0.5) = 2 <= 2 calibration examples


def test_raps_penalty_is_computed_in_the_scores_dtype():
    probs = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
    raps = RAPS(randomized=False, lam=0.1, k_reg=1).scores(probs, None)
    aps = APS(randomized=False).scores(probs, None)
    penalty = torch.tensor([[0.0, 0.1 * 2, 0.1 * 1]], dtype=torch.float64)  # ranks 1, 3, 2
    torch.testing.assert_close(raps, aps + penalty, rtol=0, atol=1e-15)  # a float32 penalty is off by ~1e-9
