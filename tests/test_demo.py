"""`vlkit demo --quick`: the README's main job, end to end, and its printed numbers are the files'."""

from __future__ import annotations

import json

from vlkit.cli import main


def test_quick_demo_writes_report_and_prints_metrics_json_numbers(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    files = {
        "": json.loads((out / "metrics.json").read_text())["metrics"],
        "concept:": json.loads((out / "concept" / "metrics.json").read_text())["metrics"],
        "group:": json.loads((out / "group" / "metrics.json").read_text())["metrics"],
    }
    assert len(summary["rows"]) >= 8
    for key, row in summary["rows"].items():
        prefix = key.split(":")[0] + ":" if ":" in key else ""
        assert row["value"] == files[prefix][key[len(prefix):]], key
        assert f"{row['value']:8.3f}" in printed
    page = (out / "report.html").read_text()
    assert "OpenMoji" in page and "CC BY-SA 4.0" in page
    assert 'src="http' not in page
    assert "report:" in printed
    # the budget it trained under, next to its numbers (printed, in summary.json and the report)
    training = summary["training"]
    assert (training["steps_done"], training["steps_planned"], training["stopped_by_budget"]) == (12, 12, False)
    assert "trained 12 of 12 steps within the 180 s time budget" in printed
    assert "12 of 12 planned steps; time budget 180 s (not reached)" in page[:page.index('<section id="headline">')]
    # the headline (unseen-concept retrieval) comes first and the sub-reports are linked
    head = page[page.index('<section id="headline">'):page.index('<section id="metrics">')]
    r1 = files["concept:"]["retrieval/text_retrieval_recall@1"]
    assert "unseen concepts: image -&gt; name R@1" in head and f"{r1:.4f}" in head
    assert 'href="concept/report.html"' in head and 'href="group/report.html"' in head
    # the concept report (evaluated with data options) shows its retrieval examples' images
    concept = (out / "concept" / "report.html").read_text()
    assert '<figure id="plot-retrieval-examples">' in concept and "Images not shown" not in concept
