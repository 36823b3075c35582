import math

import pytest
import torch

from vlkit.evaluate import EVALUATORS, EvalContext
import vlkit.evaluate.linear_probe as lp
from vlkit.evaluate.linear_probe import WD_GRID, find_peak, fit_logistic_regression, predict, search_grid


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


def recording(acc):
    """A fake validation accuracy over grid indices that records every index it is asked for."""
    calls = []

    def val_acc(i):
        calls.append(i)
        return acc(i)

    return val_acc, calls


COARSE = [0, 16, 32, 48, 64, 80, 96]  # logspace(-6, 2, 7) inside logspace(-6, 2, 97)


def test_search_grid_by_hand_on_a_single_peak():
    val_acc, calls = recording(lambda i: 1 - abs(i - 37) / 200)
    assert search_grid(val_acc) == 37
    # coarse best 32; span 8: 40; span 4: 36; span 2: 36 (38 ties it, and ties keep the first); span 1: 37
    assert calls == COARSE + [24, 32, 40] + [36, 40, 44] + [34, 36, 38] + [35, 36, 37]


def test_search_grid_ties_go_to_the_first_candidate_tried():
    """CLIP_benchmark's find_peak keeps the first strictly better candidate: a tie on the left of
    the peak moves the peak left (48 -> 40 here), and a flat curve stays at index 0."""
    assert search_grid(recording(lambda i: 1.0 if i in (40, 48) else 0.5)[0]) == 40
    assert search_grid(recording(lambda i: 0.5)[0]) == 0
    assert search_grid(recording(lambda i: 0.0)[0]) == 0  # nothing beats accuracy 0


def test_search_grid_clamps_at_the_end_of_the_grid():
    val_acc, calls = recording(lambda i: i / 96)
    assert search_grid(val_acc) == 96
    assert calls == COARSE + [88, 96, 96] + [92, 96, 96] + [94, 96, 96] + [95, 96, 96]
    val_acc, calls = recording(lambda i: 1 - i / 96)
    assert search_grid(val_acc) == 0
    assert calls[7:] == [0, 0, 8] + [0, 0, 4] + [0, 0, 2] + [0, 0, 1]


def test_find_peak_starts_from_index_zero_at_accuracy_zero():
    assert find_peak([5, 6, 7], {5: 0.0, 6: 0.0, 7: 0.0}.get) == 0
    assert find_peak([5, 6, 7], {5: 0.2, 6: 0.7, 7: 0.7}.get) == 6


def test_search_uses_validation_and_refits_the_choice_on_train_plus_val(skewed, monkeypatch):
    """Fake fits: validation accuracy peaks at grid index 37; the final fit gets WD_GRID[37] and
    the 100 training plus 40 validation samples."""
    fits = []

    def fake_fit(x, y, n_classes, weight_decay, max_iter=-1):
        fits.append((weight_decay, len(y)))
        assert (n_classes, max_iter) == (2, 9)  # the option reaches every fit
        return weight_decay

    def fake_predict(x, weight_decay):
        i = min(range(len(WD_GRID)), key=lambda j: abs(WD_GRID[j] - weight_decay))
        right = max(len(x) - abs(i - 37), 0)  # rows predicted right: one fewer per index away from 37
        return torch.nn.functional.one_hot(torch.tensor([0] * right + [1] * (len(x) - right)), 2).float()

    monkeypatch.setattr(lp, "fit_logistic_regression", fake_fit)
    monkeypatch.setattr(lp, "predict", fake_predict)
    skewed["labels"]["val"] = torch.zeros(40, dtype=torch.long)  # so "right" means predicted 0
    result = EVALUATORS.get("linear_probe").from_options({"max_iter": 9})(EvalContext.from_arrays(**skewed))
    assert result.artifacts["weight_decay"] == WD_GRID[37]
    assert fits[-1] == (WD_GRID[37], 140)  # train + val
    assert {n for _, n in fits[:-1]} == {100}  # the search fits on train only
    assert len(result.artifacts["search"]) == len(fits) - 1 == 15  # each index fitted once
    assert result.artifacts["n_train"] == 140


def test_kshot_final_fit_uses_the_shots_only_not_val(skewed):
    result = EVALUATORS.get("linear_probe").from_options({"shots": 4})(EvalContext.from_arrays(**skewed))
    assert result.artifacts["validation"] == "val"
    assert result.artifacts["n_train"] == 8  # 4 shots x 2 classes; val is not added (as CLIP_benchmark)


def test_scored_val_split_is_neither_searched_nor_trained_on(skewed):
    options = {"test_split": "val"}
    result = EVALUATORS.get("linear_probe").from_options(options)(EvalContext.from_arrays(**skewed))
    assert result.artifacts["validation"] == "0.2 of train"
    assert result.artifacts["n_train"] == 100


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


def test_fit_is_the_stationary_point_of_mean_cross_entropy_plus_half_wd_squared_norm():
    """The returned (W, b), in the caller's uncentred coordinates, zero the gradient of
    mean CE(x W + b, y) + wd / 2 * |W|^2 (bias unpenalised)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g) + 3.0  # a large common offset, as CLIP features have
    y = torch.randint(0, 3, (60,), generator=g)
    for wd in (0.3, 0.01):
        weight, bias = fit_logistic_regression(x, y, 3, wd, max_iter=300)
        assert weight.shape == (5, 3) and bias.shape == (3,)
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * wd * w.pow(2).sum()
        loss.backward()
        assert w.grad.abs().max() < 1e-3 and b.grad.abs().max() < 1e-3, wd  # float32; a wrong factor gives ~1e-2
        torch.testing.assert_close(predict(x, (weight, bias)), x @ weight + bias)


def test_search_log_records_accuracy_and_nll_of_each_value_tried(monkeypatch):
    """A fake fit whose validation logits depend on the grid index: the log holds exact values."""
    iters = []

    def fake_fit(x, y, n_classes, weight_decay, max_iter=-1):
        iters.append(max_iter)
        return weight_decay

    def fake_predict(x, weight_decay):
        i = WD_GRID.index(weight_decay)  # both rows right at 40, row 0 only within 32..48, none elsewhere
        rows = [[1.0, 0.0], [0.0, 1.0]] if i == 40 else [[1.0, 0.0], [1.0, 0.0]] if 32 <= i <= 48 else [[0.0, 1.0], [1.0, 0.0]]
        return torch.tensor(rows)

    monkeypatch.setattr(lp, "fit_logistic_regression", fake_fit)
    monkeypatch.setattr(lp, "predict", fake_predict)
    val = (torch.zeros(2, 1), torch.tensor([0, 1]))
    best, log = lp.search_weight_decay((torch.zeros(2, 1), torch.tensor([0, 1])), val, 2)
    assert best == 40  # coarse: 32 (0.5); span 8: 40 (1.0); then 40 stays
    by_index = {WD_GRID.index(e["weight_decay"]): e for e in log}
    right, wrong = math.log(1 + math.exp(-1)), math.log(1 + math.e)  # CE of logits (1, 0) at label 0, 1
    assert by_index[40]["val_acc1"] == 1.0 and by_index[40]["val_nll"] == pytest.approx(right)
    assert by_index[36]["val_acc1"] == 0.5 and by_index[36]["val_nll"] == pytest.approx((right + wrong) / 2)
    assert by_index[0]["val_acc1"] == 0.0 and by_index[0]["val_nll"] == pytest.approx(wrong)
    assert sorted(by_index) == [0, 16, 24, 32, 36, 38, 39, 40, 41, 42, 44, 48, 64, 80, 96]  # each fitted once
    assert [e["weight_decay"] for e in log] == sorted(e["weight_decay"] for e in log)
    assert set(iters) == {100}  # the default cap reaches every fit
    lp.search_weight_decay((torch.zeros(2, 1), torch.tensor([0, 1])), val, 2, max_iter=7)
    assert set(iters[15:]) == {7}


def test_bad_options_are_user_errors(skewed):
    from vlkit.errors import UserError

    ctx = EvalContext.from_arrays(**skewed)
    message = r"^linear_probe: val_fraction must be in \(0, 1\) and shots >= 0; e\.g\. val_fraction=0\.2$"
    for options in ({"val_fraction": 0.0}, {"val_fraction": 1.0}, {"shots": -1}):
        with pytest.raises(UserError, match=message):
            EVALUATORS.get("linear_probe").from_options(options)(ctx)


def test_defaults():
    cfg = lp.LinearProbeConfig()
    assert (cfg.train_split, cfg.val_split, cfg.test_split) == ("train", "val", "test")
    assert (cfg.val_fraction, cfg.shots, cfg.max_iter) == (0.2, 0, 100)
    assert len(WD_GRID) == 97 and WD_GRID[0] == pytest.approx(1e-6) and WD_GRID[-1] == pytest.approx(100.0)
    assert WD_GRID[16] == pytest.approx(10 ** (-6 + 8 / 6))  # the second coarse point of logspace(-6, 2, 7)


def test_kshot_search_draws_its_shots_from_the_rows_not_held_out(skewed, monkeypatch):
    """No val split, 4 shots: the search trains on 4 + 4 rows of the 80 not held out, scores the 20 held out."""
    from vlkit.evaluate.base import split_indices

    del skewed["image_features"]["val"], skewed["labels"]["val"]
    seen = []

    def fake_fit(x, y, n_classes, weight_decay, max_iter=100):
        seen.append(x.clone())
        return weight_decay

    monkeypatch.setattr(lp, "fit_logistic_regression", fake_fit)
    monkeypatch.setattr(lp, "predict", lambda x, wd: torch.zeros(len(x), 2))
    ctx = EvalContext.from_arrays(**skewed)
    EVALUATORS.get("linear_probe").from_options({"shots": 4})(ctx)
    held_out, rest = split_indices(100, 0.2, ctx.seed)
    shots = ctx.fewshot("train", 4, within=rest)  # 4 per class, drawn among the rows not held out
    assert len(shots) == 8 and not set(shots.tolist()) & set(held_out.tolist())
    torch.testing.assert_close(seen[0], ctx.image_features("train")[shots])


@pytest.mark.parametrize("where", ["val", "test"])
def test_n_classes_counts_the_largest_label_of_every_split(skewed, where):
    skewed["labels"][where] = skewed["labels"][where].clone()
    skewed["labels"][where][0] = 2  # a class only this split has
    result = EVALUATORS.get("linear_probe")()(EvalContext.from_arrays(**skewed))
    assert result.chance["acc1"] == pytest.approx(1 / 3)


def test_per_class_table_uses_the_class_names(skewed):
    names = {"train": ["a", "b"], "val": ["a", "b"], "test": ["a", "b"]}
    result = EVALUATORS.get("linear_probe")()(EvalContext.from_arrays(**skewed, classnames=names))
    assert result.artifacts["per_class_acc1"] == {"a": result["acc1"]}  # the test split holds class 0 only


def test_max_iter_caps_the_fit():
    """Separable classes and no decay: the weights grow for as long as the fit may run."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(30) % 3
    x = 3 * torch.eye(4)[y] + 0.1 * torch.randn(30, 4, generator=g)
    default = fit_logistic_regression(x, y, 3, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(default, fit_logistic_regression(x, y, 3, 0.0, max_iter=100)))
    assert not torch.equal(fit_logistic_regression(x, y, 3, 0.0, max_iter=20)[0], default[0])
