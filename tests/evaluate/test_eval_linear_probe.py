import math

import pytest
import torch

from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.linear_probe import WD_GRID, fit_logistic_regression, predict


def cloud(angle_deg: float, n: int, seed: int) -> torch.Tensor:
    """n points around a direction on the unit circle (the context renormalises them)."""
    g = torch.Generator().manual_seed(seed)
    a = math.radians(angle_deg) + 0.15 * torch.randn(n, generator=g)
    return torch.stack([a.cos(), a.sin()], dim=1)


@pytest.fixture
def skewed():
    """Train 70/30 (class 0 at -45 deg, class 1 at +45 deg); val balanced and clean, so it
    prefers a weak weight decay; test holds class-1-looking points labelled 0, so it would
    prefer a huge weight decay (which predicts the majority class everywhere)."""
    train_x = torch.cat([cloud(-45, 70, 0), cloud(45, 30, 1)])
    train_y = torch.tensor([0] * 70 + [1] * 30)
    val_x = torch.cat([cloud(-45, 20, 2), cloud(45, 20, 3)])
    val_y = torch.tensor([0] * 20 + [1] * 20)
    test_x, test_y = cloud(45, 30, 4), torch.zeros(30, dtype=torch.long)
    return {"image_features": {"train": train_x, "val": val_x, "test": test_x},
            "labels": {"train": train_y, "val": val_y, "test": test_y}}


def test_weight_decay_is_chosen_on_validation_not_test(skewed):
    # the test set would prefer the largest weight decay: majority class everywhere
    strong = fit_logistic_regression(skewed["image_features"]["train"], skewed["labels"]["train"], 2, WD_GRID[-1])
    test_pred = predict(skewed["image_features"]["test"], strong).argmax(1)
    assert (test_pred == skewed["labels"]["test"]).double().mean() == 1.0

    ctx = EvalContext.from_arrays(**skewed)
    result = EVALUATORS.get("linear_probe")()(ctx)
    chosen = result.artifacts["weight_decay"]
    best_val = max(s["val_acc1"] for s in result.artifacts["search"])
    assert best_val == 1.0
    assert chosen < 1e-1  # a weak decay, as validation asked
    assert result["acc1"] < 0.2  # ... so the test set is (rightly) not rescued
    assert result.artifacts["validation"] == "val"


def test_search_refines_around_the_coarse_best(skewed):
    ctx = EvalContext.from_arrays(**skewed)
    search = EVALUATORS.get("linear_probe")()(ctx).artifacts["search"]
    assert 9 < len(search) < 25  # 13 coarse points plus a few refinements, not the whole grid


def test_no_val_split_holds_out_part_of_train_and_kshot(skewed):
    del skewed["image_features"]["val"], skewed["labels"]["val"]
    ctx = EvalContext.from_arrays(**skewed)
    result = EVALUATORS.get("linear_probe").from_options({"shots": 4})(ctx)
    assert result.artifacts["validation"] == "0.2 of train"
    assert result.artifacts["n_train"] == 8  # 4 shots x 2 classes
    assert set(result) == {"acc1", "acc5", "mean_per_class_recall"}


def test_linear_probe_learns_separable_classes():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 3
    def draw(n):
        y = torch.arange(n) % 5
        return centers[y] + torch.randn(n, 16, generator=g), y
    (trx, try_), (vax, vay), (tex, tey) = draw(100), draw(50), draw(50)
    ctx = EvalContext.from_arrays(image_features={"train": trx, "val": vax, "test": tex},
                                  labels={"train": try_, "val": vay, "test": tey})
    result = EVALUATORS.get("linear_probe")()(ctx)
    assert result["acc1"] > 0.9 and result["acc5"] == 1.0


def test_views_with_split_local_classes_are_refused(skewed):
    from vlkit.errors import UserError

    names = {"train": ["a", "b"], "val": ["a", "b"], "test": ["c", "d"]}
    ctx = EvalContext.from_arrays(**skewed, classnames=names)
    with pytest.raises(UserError, match="different classes in train and val and test"):
        EVALUATORS.get("linear_probe")()(ctx)
