import math

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.base import split_indices
from vlkit.evaluate.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def test_ece_by_hand():
    # confidences 0.9 (right), 0.91 (wrong) share bin (13/15, 14/15]; 0.62, 0.55, 0.85 sit alone
    p = torch.tensor([0.9, 0.91, 0.62, 0.55, 0.85], dtype=torch.float64)
    probs = torch.stack([p, 1 - p], dim=1)
    labels = torch.tensor([0, 1, 0, 0, 1])
    expected = 2 / 5 * abs(0.5 - 0.905) + 1 / 5 * (abs(1 - 0.62) + abs(1 - 0.55) + abs(0 - 0.85))
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 5
    assert bins[13]["count"] == 2 and bins[13]["accuracy"] == 0.5


def test_ece_bins_are_lo_exclusive_hi_inclusive_at_edges_and_one():
    """5 bins; confidences 1.0 and 0.8, 0.6, 0.4 sit exactly on edges and close the bin below them."""
    probs = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # conf 1.0, right -> (0.8, 1.0]
            [0.2, 0.6, 0.2],  # conf 0.6, wrong -> (0.4, 0.6]
            [0.8, 0.1, 0.1],  # conf 0.8, right -> (0.6, 0.8]
            [0.4, 0.35, 0.25],  # conf 0.4, wrong -> (0.2, 0.4]
            [0.1, 0.5, 0.4],  # conf 0.5, right -> (0.4, 0.6]
            [0.3, 0.3, 0.4],  # conf 0.4, right -> (0.2, 0.4]
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    bins = reliability_bins(probs, labels, n_bins=5)
    assert [b["count"] for b in bins] == [0, 2, 2, 1, 1]
    assert [(b["lo"], b["hi"]) for b in bins][1] == (0.2, 0.4)
    assert [b["accuracy"] for b in bins] == [None, 0.5, 0.5, 1.0, 1.0]
    # (0.2, 0.4]: |0.5 - 0.4|; (0.4, 0.6]: |0.5 - 0.55|; (0.6, 0.8]: |1 - 0.8|; (0.8, 1]: |1 - 1|
    expected = 2 / 6 * 0.1 + 2 / 6 * 0.05 + 1 / 6 * 0.2 + 1 / 6 * 0.0
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected)


def test_ece_edge_where_linspace_rounds_down():
    """linspace(0, 1, 12)[9] is one ulp below 9 / 11; a confidence of 9 / 11 still closes (8/11, 9/11]."""
    conf = 9 / 11
    probs = torch.tensor([[conf, 1 - conf], [0.3, 0.7]], dtype=torch.float64)
    labels = torch.tensor([0, 0])  # right at 9/11, wrong at 0.7 (bin (7/11, 8/11])
    bins = reliability_bins(probs, labels, n_bins=11)
    assert [i for i, b in enumerate(bins) if b["count"]] == [7, 8]
    assert expected_calibration_error(probs, labels, n_bins=11) == pytest.approx((1 - conf + 0.7) / 2)


@pytest.mark.parametrize("n_bins", [0, -3])
def test_non_positive_n_bins_is_a_user_error(n_bins):
    probs = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    with pytest.raises(UserError, match=r"calibration\.n_bins=.* must be a positive integer; use e\.g\. calibration\.n_bins=15"):
        expected_calibration_error(probs, torch.tensor([0]), n_bins=n_bins)
    ctx = EvalContext.from_arrays(logits=torch.randn(8, 3), labels=torch.randint(0, 3, (8,)))
    with pytest.raises(UserError, match=r"calibration\.n_bins"):
        EVALUATORS.get("calibration").from_options({"n_bins": n_bins})(ctx)


def test_brier_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64)
    assert brier_score(probs, torch.tensor([0, 0])) == pytest.approx((0.01 + 0.01 + 0.49 + 0.49) / 2)


def overconfident(n: int, seed: int):
    """Labels drawn from softmax(z); the model reports 4 z (over-confident by T = 4)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g)
    labels = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    return 4 * z, labels


def test_temperature_scaling_lowers_nll_on_overconfident_logits():
    (val_logits, val_y), (test_logits, test_y) = overconfident(1000, 0), overconfident(1000, 1)
    assert fit_temperature(val_logits, val_y) == pytest.approx(4.0, rel=0.15)
    ctx = EvalContext.from_arrays(logits={"val": val_logits, "test": test_logits}, labels={"val": val_y, "test": test_y})
    result = EVALUATORS.get("calibration")()(ctx)
    assert result["nll_ts"] < result["nll"] - 0.1
    assert result["ece_ts"] < result["ece"]
    assert result["brier_ts"] < result["brier"]
    assert "fitted on 'val'" in result.artifacts["protocol"]
    assert len(result.artifacts["reliability"]["after"]) == 15


def test_without_val_split_fits_on_half_of_test():
    logits, y = overconfident(400, 2)
    ctx = EvalContext.from_arrays(logits={"test": logits}, labels={"test": y})
    result = EVALUATORS.get("calibration")()(ctx)
    assert "half" in result.artifacts["protocol"]
    assert result["temperature"] > 1.5


def test_reliability_bin_fields_by_hand():
    probs = torch.tensor([[0.3, 0.7], [0.9, 0.1], [0.35, 0.65]], dtype=torch.float64)
    bins = reliability_bins(probs, torch.tensor([1, 1, 0]), n_bins=4)  # (0.5, 0.75]: 0.7 right, 0.65 wrong
    assert [(b["lo"], b["hi"], b["count"]) for b in bins] == [(0.0, 0.25, 0), (0.25, 0.5, 0), (0.5, 0.75, 2), (0.75, 1.0, 1)]
    assert bins[2]["confidence"] == pytest.approx(0.675) and bins[2]["accuracy"] == 0.5
    assert bins[3]["confidence"] == pytest.approx(0.9) and bins[3]["accuracy"] == 0.0
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None
    assert reliability_bins(probs, torch.tensor([1, 1, 0])) == reliability_bins(probs, torch.tensor([1, 1, 0]), 15)


def test_calibration_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    p0 = math.exp(2) / (math.exp(2) + 2)  # true-class probability of row 0
    p1, q1 = math.e / (math.e + 2), 1 / (math.e + 2)  # row 1: top (class 1, wrong) and true class 2
    m = calibration_metrics(logits, labels)
    assert m["nll"] == pytest.approx((-math.log(p0) - math.log(q1)) / 2)
    brier = ((1 - p0) ** 2 + 2 * ((1 - p0) / 2) ** 2 + p1**2 + q1**2 + (1 - q1) ** 2) / 2
    assert m["brier"] == pytest.approx(brier)
    # 15 bins: 0.787 (right) in (11/15, 12/15], 0.576 (wrong) in (8/15, 9/15]
    assert m["ece"] == pytest.approx((abs(1 - p0) + abs(0 - p1)) / 2)


def test_fit_temperature_is_the_nll_minimiser():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    logits, y = overconfident(500, 3)
    t = fit_temperature(logits, y)

    def nll(temperature):
        return torch.nn.functional.cross_entropy(logits.double() / temperature, y).item()

    reference = scipy_optimize.minimize_scalar(nll, bounds=(0.05, 50), method="bounded", options={"xatol": 1e-8}).x
    assert t == pytest.approx(reference, rel=1e-4)


def test_evaluator_metrics_are_the_functions_on_the_fitted_temperature():
    (val_logits, val_y), (test_logits, test_y) = overconfident(300, 4), overconfident(200, 5)
    ctx = EvalContext.from_arrays(logits={"val": val_logits, "test": test_logits}, labels={"val": val_y, "test": test_y})
    result = EVALUATORS.get("calibration").from_options({"n_bins": 10})(ctx)
    t = fit_temperature(val_logits, val_y)
    assert result["temperature"] == pytest.approx(t)
    before, after = calibration_metrics(test_logits, test_y, 10), calibration_metrics(test_logits / t, test_y, 10)
    for key in ("ece", "nll", "brier"):
        assert result[key] == pytest.approx(before[key]) and result[f"{key}_ts"] == pytest.approx(after[key])
    assert result["acc1"] == pytest.approx((test_logits.argmax(1) == test_y).double().mean().item())
    assert result.chance["acc1"] == pytest.approx(1 / 6)
    assert result.artifacts["protocol"] == "temperature fitted on 'val', scored on 'test'"
    reliability = result.artifacts["reliability"]
    assert reliability["before"] == reliability_bins(test_logits.double().softmax(1), test_y, 10)
    assert reliability["after"] == reliability_bins((test_logits.double() / t).softmax(1), test_y, 10)


def test_without_val_split_the_first_seeded_half_fits_and_the_second_is_scored():
    logits, y = overconfident(60, 6)
    ctx = EvalContext.from_arrays(logits={"test": logits}, labels={"test": y}, seed=7)
    result = EVALUATORS.get("calibration")()(ctx)
    fit_idx, test_idx = split_indices(60, 0.5, 7)
    t = fit_temperature(logits[fit_idx], y[fit_idx])
    assert result["temperature"] == pytest.approx(t)
    assert result["nll"] == pytest.approx(calibration_metrics(logits[test_idx], y[test_idx])["nll"])
    assert result.artifacts["protocol"] == (
        "no 'val' split: temperature fitted on a seeded half of 'test', scored on the other half")


def test_calibration_metrics_pass_n_bins_and_the_artifact_names_the_scale():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.5], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    probs = logits.softmax(1)
    two_bins = calibration_metrics(logits, labels, 2)["ece"]
    assert two_bins == pytest.approx(expected_calibration_error(probs, labels, 2))
    assert two_bins != pytest.approx(expected_calibration_error(probs, labels, 15))
    ctx = EvalContext.from_arrays(logits={"val": logits, "test": logits}, labels={"val": labels, "test": labels},
                                  logit_scale=30.0)
    assert EVALUATORS.get("calibration")()(ctx).artifacts["logit_scale"] == 30.0


@pytest.mark.parametrize("n_bins", [2.5, True, "15"])
def test_n_bins_that_is_not_an_integer_is_a_user_error(n_bins):
    with pytest.raises(UserError, match=r"calibration\.n_bins=.* must be a positive integer"):
        reliability_bins(torch.tensor([[0.9, 0.1]], dtype=torch.float64), torch.tensor([0]), n_bins=n_bins)


def test_first_bin_holds_confidences_up_to_its_edge():
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.25, 0.25], [0.9, 0.05, 0.05]], dtype=torch.float64)
    bins = reliability_bins(probs, torch.tensor([0, 1, 0]), n_bins=2)  # (0, 0.5]: 0.4 right, 0.5 wrong
    assert [b["count"] for b in bins] == [2, 1]
    assert bins[0]["confidence"] == pytest.approx(0.45) and bins[0]["accuracy"] == 0.5


def test_one_bin_is_the_gap_between_accuracy_and_mean_confidence():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])  # right, wrong, right
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(abs(2 / 3 - (0.9 + 0.6 + 0.7) / 3))
