"""The runner on the real model and data layers: preset:tiny-clip on small shapes and digits."""

import json
import math

import pytest
import torch

import vlkit.data
import vlkit.models
from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext, run
from vlkit.evaluate.zeroshot import context_classifier


@pytest.fixture(scope="module")
def tiny_clip():
    return vlkit.models.load("preset:tiny-clip")


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    return {s: vlkit.data.load("shapes:color", s, n_train=48, n_val=24, n_test=32, image_size=32)
            for s in ("train", "val", "test")}


def test_every_suite_on_tiny_clip_and_shapes(tmp_path, tiny_clip, small_shapes):
    # style_shift reloads a spec in other styles (openmoji): tests/evaluate/test_style_shift.py
    suites = [s for s in EVALUATORS.names() if s != "style_shift"]
    out = run(tiny_clip, small_shapes, suites, out_dir=tmp_path, options={"linear_probe": {"shots": 2}})
    assert {k.split("/")[0] for k in out["metrics"]} == set(suites)
    # zero-shot by hand from the model's own features: 100 * image @ classifier, argmax
    ctx = EvalContext.from_model(tiny_clip, small_shapes)
    logits = 100 * ctx.image_features("test") @ context_classifier(ctx, "test")
    labels = torch.as_tensor(small_shapes["test"].targets)
    assert out["metrics"]["zeroshot/acc1"] == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    per_class = out["artifacts"]["linear_probe"]["per_class_acc1"]
    assert out["metrics"]["linear_probe/mean_per_class_recall"] == pytest.approx(sum(per_class.values()) / len(per_class))
    counts = torch.bincount(torch.as_tensor(small_shapes["train"].targets))
    assert out["artifacts"]["linear_probe"]["n_train"] == int(counts.clamp(max=2).sum())  # 2 shots per class
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"]["fingerprint"] == tiny_clip.fingerprint()
    assert saved["data"]["splits"]["test"]["fingerprint"] == small_shapes["test"].fingerprint()
    assert math.isclose(saved["model"]["logit_scale"], tiny_clip.logit_scale.exp().item(), rel_tol=1e-6)


def test_features_come_from_the_feature_cache_on_a_second_run(tiny_clip, small_shapes, monkeypatch):
    run(tiny_clip, small_shapes, ["zeroshot"])
    calls = []
    original = tiny_clip.encode_image
    monkeypatch.setattr(tiny_clip, "encode_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = run(tiny_clip, small_shapes, ["zeroshot"])
    assert calls == [] and "zeroshot/acc1" in again["metrics"]


def test_text_features_come_from_the_cache_on_a_second_run_and_follow_the_weights(tiny_clip, small_shapes,
                                                                                    monkeypatch):
    first = run(tiny_clip, small_shapes, ["zeroshot", "retrieval"])
    calls = []
    original = tiny_clip.encode_text
    monkeypatch.setattr(tiny_clip, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = run(tiny_clip, small_shapes, ["zeroshot", "retrieval"])
    assert calls == [] and again["metrics"] == first["metrics"]
    proj = tiny_clip.text.text_projection
    with torch.no_grad():  # new text weights: a new fingerprint, so the tower runs again
        proj.mul_(-1)
    try:
        run(tiny_clip, small_shapes, ["zeroshot"])
        assert calls  # not served the old weights' features
    finally:
        with torch.no_grad():
            proj.mul_(-1)


def test_dataset_spec_string_and_its_split_errors(tiny_clip):
    out = run(tiny_clip, "digits", ["zeroshot"])
    assert out["data"]["spec"] == "digits" and out["chance"]["zeroshot/acc1"] == pytest.approx(0.1)
    with pytest.raises(UserError, match="has no split 'holdout'; available: "):
        run(tiny_clip, "digits", ["zeroshot"], options={"zeroshot": {"split": "holdout"}})


@pytest.mark.parametrize("form", ["--data NAME@k=v", "old --data-option"])
def test_dataset_options_reach_the_dataset_and_are_recorded(tmp_path, tiny_clip, capsys, form):
    from vlkit.cli import main

    options = {"n_train": 16, "n_val": 8, "n_test": 20, "image_size": 32}
    out = run(tiny_clip, "shapes:color", ["retrieval"], data_options=options, out_dir=tmp_path / "api")
    assert out["artifacts"]["retrieval"]["n_images"] == 20
    assert out["data"]["options"] == options
    joined = ",".join(f"{k}={v}" for k, v in options.items())
    if form == "old --data-option":
        given = ["--data", "shapes:color", *(f"--data-option={k}={v}" for k, v in options.items())]
        typo = [*given[:-1], "--data-option=n_tset=20"]
    else:
        given = ["--data", f"shapes:color@{joined}"]
        typo = ["--data", "shapes:color@" + joined.replace("n_test", "n_tset")]
    args = ["eval", "preset:tiny-clip", "--suite", "retrieval", "--out", str(tmp_path / "cli")]
    assert main([*args, *given]) == 0
    saved = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert saved["data"]["options"] == options and saved["data"]["spec"] == "shapes:color"
    err = capsys.readouterr().err
    note = f"vlkit: note: --data-option is an older form; write --data shapes:color@{joined}"
    assert (note in err.splitlines()) == (form == "old --data-option")
    assert main([*args[:-2], "--out", str(tmp_path / "typo"), *typo]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vlkit: error: ") and "n_tset" in err and "n_test" in err  # the key and the valid ones
