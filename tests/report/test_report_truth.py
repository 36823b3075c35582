"""What the report shows, and only where it informs (issue 17): retrieval images for runs with
data options, a confusion matrix where classes are few, per-class bars only where they differ,
the headline and sub-report links first."""

from __future__ import annotations

import json

import torch

from vlkit import report
from vlkit.evaluate.base import CONFUSION_MAX_CLASSES, confusion_table
from vlkit.report.panels import ConfusionPanel, PerClassPanel


def test_confusion_counts_true_rows_against_predicted_columns():
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [2, 1, 0], [0, 0, 5], [0, 4, 1]])  # argmax 0, 1, 0, 2, 1
    labels = torch.tensor([0, 1, 1, 2, 2])
    table = confusion_table(logits, labels, ["cat", "dog", "fox"])
    assert table == {"classes": ["cat", "dog", "fox"], "counts": [[1, 0, 0], [1, 1, 0], [0, 1, 1]]}
    many = torch.zeros(4, CONFUSION_MAX_CLASSES + 1)
    assert confusion_table(many, torch.zeros(4, dtype=torch.long), None) is None


def test_per_class_bars_only_where_they_carry_information():
    panel = PerClassPanel()
    assert panel.accepts({"per_class_acc1": {"a": 0.5, "b": 0.25}})
    assert not panel.accepts({"per_class_acc1": {"a": 0.5}})  # one class: the bar is acc1 again
    assert not panel.accepts({"per_class_acc1": {"a": 1.0, "b": 1.0, "c": 1.0}})  # all equal
    assert ConfusionPanel().accepts({"confusion": {"classes": ["a", "b"], "counts": [[1, 0], [0, 1]]}})
    assert not ConfusionPanel().accepts({"confusion": {"classes": ["a"], "counts": [[3]]}})


def test_the_digits_run_draws_its_confusion_matrix_from_the_recorded_counts(digits_run):
    out, _ = digits_run
    artifacts = json.loads((out / "artifacts.json").read_text())["zeroshot"]
    counts = artifacts["confusion"]["counts"]
    assert len(counts) == 10 and sum(map(sum, counts)) == artifacts["n_samples"]
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    assert abs(sum(counts[i][i] for i in range(10)) / artifacts["n_samples"] - saved["zeroshot/acc1"]) < 1e-6  # acc1 is a float32
    assert '<figure id="plot-zeroshot-confusion">' in (out / "report.html").read_text()


def test_retrieval_examples_keep_their_images_when_data_options_were_used(cli, tmp_path):
    """The evaluated data had options (digits inverted); the report loads the recorded spec with
    them, so the fingerprint matches and the examples are drawn, not listed."""
    out = tmp_path / "inverted"
    result = cli(["eval", "preset:tiny-clip", "--data", "digits", "--suite", "retrieval", "--out", str(out),
                  "--data-option", "light_on_dark=true", "--option", "retrieval.n_examples=2"])
    assert result.rc == 0, result.err
    assert json.loads((out / "metrics.json").read_text())["data"]["options"] == {"light_on_dark": True}
    text = (out / "report.html").read_text()
    assert '<figure id="plot-retrieval-examples">' in text and "Images not shown" not in text
    # the Python API's default (no dataset given) does the same
    text = report.write(out).read_text()
    assert '<figure id="plot-retrieval-examples">' in text


def test_headline_rows_and_sub_report_links_come_before_the_metrics(digits_run, tmp_path):
    import shutil

    run_dir = tmp_path / "main"
    run_dir.mkdir()
    shutil.copy(digits_run[0] / "metrics.json", run_dir / "metrics.json")
    text = report.write(run_dir, headline=[("unseen R@1", 0.25, 0.003)],
                        links={"concepts": "concept/report.html"}).read_text()
    head = text[text.index('<section id="headline">'):text.index('<section id="metrics">')]
    assert "<td>unseen R@1</td>" in head and "0.2500" in head and "0.0030" in head
    assert '<a href="concept/report.html">concepts</a>' in head


def test_eval_refuses_an_out_dir_holding_another_runs_results_unless_overwrite(cli, tmp_path):
    import pytest

    from vlkit import evaluate
    from vlkit.errors import UserError

    out = tmp_path / "eval"
    argv = ["eval", "preset:tiny-clip", "--data", "digits", "--suite", "zeroshot", "--out", str(out)]
    assert cli(argv).rc == 0
    before = (out / "metrics.json").read_text()
    second = cli([*argv[:5], "retrieval", *argv[6:]])  # another run (other suite) into the same folder
    assert second.rc == 2 and second.err.strip().splitlines() == [
        f"vlkit: error: {out} already holds the results of another run (metrics.json); choose a new --out "
        "directory, or pass --overwrite (overwrite=True) to replace them"]
    assert (out / "metrics.json").read_text() == before  # nothing was touched
    assert cli([*argv[:5], "retrieval", *argv[6:], "--overwrite"]).rc == 0
    assert set(json.loads((out / "metrics.json").read_text())["metrics"]) >= {"retrieval/image_retrieval_recall@1"}
    # the Python API: the same refusal, and report.html next to the metrics as the README says
    with pytest.raises(UserError, match="already holds the results of another run"):
        evaluate.run("preset:tiny-clip", "digits", ["zeroshot"], out_dir=out)
    api = tmp_path / "api"
    evaluate.run("preset:tiny-clip", "digits", ["zeroshot"], out_dir=api, progress=False)
    assert (api / "report.html").is_file() and (api / "metrics.json").is_file()
