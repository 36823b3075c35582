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
