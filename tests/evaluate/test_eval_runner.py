import json
import math

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext, run

SUITES = ["zeroshot", "retrieval", "linear_probe", "calibration", "conformal", "compositional", "robustness", "reward"]


def test_run_writes_flat_metrics_json_and_markdown(tmp_path, fake_model, fake_data):
    out = run(fake_model, fake_data, ["zeroshot", "retrieval", "linear_probe", "calibration", "conformal"],
              out_dir=tmp_path, seed=3, options={"conformal": {"alpha": 0.2}})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == {"metrics", "chance", "model", "data", "config", "seed", "versions"}
    assert saved["seed"] == 3 and saved["config"]["conformal"]["alpha"] == 0.2
    assert saved["model"]["fingerprint"] == "fake-color-model-v1"
    assert saved["versions"]["torch"] and saved["versions"]["python"]
    for key, value in saved["metrics"].items():
        suite, metric = key.split("/")  # exactly one level: suite/metric
        assert suite in EVALUATORS and (value is None or isinstance(value, (int, float)))
    # 4 colors: acc5 is NaN -> null in strict JSON, "n/a" in the table
    assert saved["metrics"]["zeroshot/acc5"] is None and math.isnan(out["metrics"]["zeroshot/acc5"])
    assert saved["metrics"]["zeroshot/acc1"] > 0.9 > saved["chance"]["zeroshot/acc1"]
    assert saved["metrics"]["linear_probe/acc1"] > 0.9
    md = (tmp_path / "metrics.md").read_text()
    assert "## zeroshot" in md and "| acc1 | " in md and "| acc5 | n/a |" in md and "0.2500" in md
    assert "examples" in json.loads((tmp_path / "artifacts.json").read_text())["retrieval"]
    assert set(saved["data"]["splits"]) == {"train", "val", "test"}


def test_every_suite_runs_through_the_runner(fake_model, fake_data):
    out = run(fake_model, fake_data, SUITES)
    # style_shift reloads a dataset spec in other styles: tests/evaluate/test_style_shift.py runs it
    assert {k.split("/")[0] for k in out["metrics"]} == set(SUITES) == set(EVALUATORS.names()) - {"style_shift"}


def test_image_features_are_encoded_once_per_split_and_shared(fake_model, fake_data):
    run(fake_model, fake_data, ["zeroshot", "calibration", "conformal", "retrieval"], batch_size=1000, cache=False)
    assert fake_model.image_calls == 2  # test and val, one batch each, for four suites


def test_encode_text_is_memoised_per_text():
    calls = []

    def encode(texts):
        calls.extend(texts)
        return torch.ones(len(texts), 2)

    ctx = EvalContext.from_arrays(encode_text=encode)
    ctx.encode_text(["a", "b", "a"])
    ctx.encode_text(["b", "c"])
    assert calls == ["a", "b", "c"]


def test_unknown_suite_and_bad_options_are_user_errors(fake_model, fake_data):
    with pytest.raises(UserError, match="unknown evaluator 'zeroshott'.*did you mean 'zeroshot'"):
        run(fake_model, fake_data, ["zeroshott"])
    with pytest.raises(UserError, match="unknown config key 'zeroshot.splitt'"):
        run(fake_model, fake_data, ["zeroshot"], options={"zeroshot": {"splitt": "val"}})
    with pytest.raises(UserError, match="not run"):
        run(fake_model, fake_data, ["zeroshot"], options={"retrieval": {}})


def test_model_without_text_tower_is_a_user_error(fakes, fake_data):
    model = fakes.Model()
    model.text = None
    with pytest.raises(UserError, match=r"^zeroshot: the model has no text tower"):
        run(model, fake_data, ["zeroshot"])
    assert "linear_probe/acc1" in run(model, fake_data, ["linear_probe"])["metrics"]  # image-only suites still work


def test_empty_split_and_missing_split_are_user_errors(fakes, fake_model, fake_data):
    data = {**fake_data, "test": fakes.Dataset("test", 0)}
    with pytest.raises(UserError, match=r"^zeroshot: split 'test' of colors is empty"):
        run(fake_model, data, ["zeroshot"])
    with pytest.raises(UserError, match="has no split 'holdout'; available: test, train, val"):
        run(fake_model, fake_data, ["zeroshot"], options={"zeroshot": {"split": "holdout"}})


def test_view_without_classnames_is_a_user_error(fakes, fake_model):
    data = {"test": fakes.Dataset("test", 10, view=None)}
    with pytest.raises(UserError, match="no class names"):
        run(fake_model, data, ["zeroshot"])
    assert "retrieval/text_retrieval_recall@1" in run(fake_model, data, ["retrieval"])["metrics"]


def test_default_split_history_and_run_config(tmp_path, fake_model, fake_data):
    out = run(fake_model, fake_data, ["zeroshot", "linear_probe"], out_dir=tmp_path, split="val",
              options={"zeroshot": {"split": "test"}}, history=[{"step": 1, "loss": 2.5}], config={"lr": 0.1})
    assert out["config"]["zeroshot"]["split"] == "test"  # options win over the default split
    assert out["config"]["linear_probe"]["test_split"] == "val"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["history"] == [{"step": 1, "loss": 2.5}] and saved["run_config"] == {"lr": 0.1}
