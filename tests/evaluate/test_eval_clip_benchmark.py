"""An evaluation's CLIP_benchmark files: ``clip_benchmark build`` aggregates them beside its own."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest

from vlkit.evaluate import run
from vlkit.evaluate.clip_benchmark_format import model_names


def _build(tmp_path, *paths) -> dict[str, dict]:
    """CLIP_benchmark's own `build` over ``paths``; rows keyed by (task, model_fullname)."""
    pytest.importorskip("clip_benchmark", reason="clip-benchmark is not installed (pip install vlkit[bench])")
    from clip_benchmark import cli  # installed but broken (a missing dependency) fails, not skips

    out = tmp_path / "benchmark.csv"
    cli.main_build(SimpleNamespace(files=[str(p) for p in paths], output=str(out)))
    with open(out) as f:
        return {(r["task"], r["model_fullname"]): r for r in csv.DictReader(f)}


def test_clip_benchmark_build_aggregates_a_vlkit_run_beside_its_own(tmp_path, fake_model, fake_data):
    out = tmp_path / "run"
    run(fake_model, fake_data, ["zeroshot", "retrieval", "linear_probe", "calibration"], out_dir=out)
    saved = json.loads((out / "metrics.json").read_text())
    files = sorted(p.name for p in (out / "clip_benchmark").glob("*.json"))
    assert len(files) == 4 and all(f.startswith("colors_") and f.endswith(".json") for f in files)
    # a file as `clip_benchmark eval` writes it, in another folder
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "cifar10_openai_ViT-B-32_en_zeroshot_classification.json").write_text(json.dumps(
        {"dataset": "cifar10", "model": "ViT-B-32", "pretrained": "openai", "task": "zeroshot_classification",
         "metrics": {"acc1": 0.8983, "acc5": 0.9968, "mean_per_class_recall": 0.8982}, "language": "en"}))
    rows = _build(tmp_path, out / "clip_benchmark", theirs)
    fp = saved["model"]["fingerprint"]
    mine = f"{type(fake_model).__name__} {fp}"  # no spec given: the class, then the weights' fingerprint
    assert set(rows) == {("zeroshot_classification", mine), ("zeroshot_retrieval", mine), ("linear_probe", mine),
                         ("calibration", mine), ("zeroshot_classification", "ViT-B-32 openai")}
    zs = rows[("zeroshot_classification", mine)]
    assert float(zs["acc1"]) == pytest.approx(saved["metrics"]["zeroshot/acc1"])
    assert zs["acc5"] == ""  # NaN (4 classes) is null in the JSON, an empty cell in the CSV
    assert zs["dataset"] == "colors" and zs["language"] == "en" and zs["pretrained"] == fp
    lp = rows[("linear_probe", mine)]
    assert float(lp["lp_acc1"]) == pytest.approx(saved["metrics"]["linear_probe/acc1"])  # CLIP_benchmark's name
    ret = rows[("zeroshot_retrieval", mine)]
    assert float(ret["image_retrieval_recall@1"]) == pytest.approx(
        saved["metrics"]["retrieval/image_retrieval_recall@1"])
    assert rows[("zeroshot_classification", "ViT-B-32 openai")]["acc1"] == "0.8983"
    # the flat suite/metric keys of metrics.json are still there for vlkit's readers
    assert "zeroshot/acc1" in saved["metrics"] and isinstance(saved["model"], dict)


def test_a_second_evaluation_replaces_the_records_of_the_first(tmp_path, fake_model, fake_data):
    run(fake_model, fake_data, ["zeroshot", "calibration"], out_dir=tmp_path)
    run(fake_model, fake_data, ["retrieval"], out_dir=tmp_path, overwrite=True)
    records = [json.loads(p.read_text()) for p in (tmp_path / "clip_benchmark").glob("*.json")]
    assert [r["task"] for r in records] == ["zeroshot_retrieval"]


def test_model_and_pretrained_are_named_as_clip_benchmark_names_them():
    assert model_names("openclip:ViT-B-32@laion2b_s34b_b79k", "f1") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert model_names("openclip:ViT-B-32@/ckpts/run1/epoch_3.pt", "f1") == ("ViT-B-32", "epoch_3.pt")
    assert model_names("preset:moji-lit-s", "abc123") == ("preset:moji-lit-s", "abc123")
