import pytest
import torch

from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.calibration import brier_score, expected_calibration_error, fit_temperature, reliability_bins


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
    (val_logits, val_y), (test_logits, test_y) = overconfident(3000, 0), overconfident(3000, 1)
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
