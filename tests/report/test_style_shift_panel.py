"""The report's style-shift table: a row per drawing, each metric with its ratio to the original."""

from pathlib import Path

from vlkit.report.inputs import RunFiles
from vlkit.report.panels import render_suite


def test_style_shift_table_has_a_row_per_drawing_with_ratios():
    table = {"original": {"text_retrieval_recall@1": 0.4, "image_retrieval_recall@1": 0.5, "acc1": 0.8},
             "edges": {"text_retrieval_recall@1": 0.1, "image_retrieval_recall@1": 0.0, "acc1": 0.6},
             "twemoji": {"text_retrieval_recall@1": 0.3, "image_retrieval_recall@1": 0.25, "acc1": 0.2}}
    artifacts = {"table": table, "examples": {}, "split": "test", "captions": "first"}
    run = RunFiles(Path("."), {"metrics": {}, "data": {"name": "openmoji"}}, {"style_shift": artifacts})
    sections, left = render_suite("style_shift", artifacts, run, None)
    (section,) = [s for s in sections if s.id == "style_shift-table"]
    rows = section.html.split("<tr>")[2:]  # after the header row
    assert len(rows) == 3 and "original" in rows[0] and "edges" in rows[1] and "twemoji" in rows[2]
    assert "<td>0.100</td><td>0.25</td>" in rows[1]  # 0.1 / 0.4
    assert "<td>0.000</td><td>0.00</td>" in rows[1] and "<td>0.600</td><td>0.75</td>" in rows[1]
    assert "<td>0.300</td><td>0.75</td><td>0.250</td><td>0.50</td><td>0.200</td><td>0.25</td>" in rows[2]
    assert "table" not in left
