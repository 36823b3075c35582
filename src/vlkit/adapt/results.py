"""One results table per protocol, as markdown (to read) and JSON (to compare), in the run directory.

A table is ``{"columns": [...], "rows": [{"method": ..., column: cell}], "records": [...]}`` where
a cell is a number, ``None`` (n/a: the method cannot classify those classes) or
``{"mean", "std", "n"}`` over seeds. Accuracies are stored as fractions and shown in percent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        if value.get("mean") is None:
            return "n/a"
        if value.get("n", 1) > 1:
            return f"{100 * value['mean']:.1f} ± {100 * value['std']:.1f}"
        return f"{100 * value['mean']:.1f}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.1f}"
    return str(value)


def markdown(protocol: str, table: dict, header: dict) -> str:
    """The table as markdown, opened by what ran (data, model, shots, seeds)."""
    lines = [f"# {protocol} results", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [f"- metric: {table.get('metric', 'top-1 accuracy (%)')}", ""]
    cols = ["method", *table["columns"]]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    for row in table["rows"]:
        lines.append("| " + " | ".join([row["method"], *(_cell(row.get(c)) for c in table["columns"])]) + " |")
    settings = table.get("settings") or []
    if settings:
        lines += ["", "Settings (each method's reference unless overridden):", "",
                  "| method | optimizer | model reported | training augmentation |", "|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['optimizer']} | {r['selection']} | {r['augmentation']} |" for r in settings]
    for note in table.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write(out_dir: Path, protocol: str, table: dict, header: dict) -> dict[str, Path]:
    """Write ``results-<protocol>.md`` and ``.json`` and ``report.html``; return their paths."""
    from .. import report
    from ..engine.checkpoint import atomic_write

    md = out_dir / f"results-{protocol}.md"
    js = out_dir / f"results-{protocol}.json"
    for path, text in ((md, markdown(protocol, table, header)),
                       (js, json.dumps(_jsonable({"protocol": protocol, **header, **table}), indent=2))):
        atomic_write(path, lambda f, text=text: f.write(text.encode("utf-8")), what=path.name)  # whole or not at all
    tables = [(table.get("metric", "top-1 accuracy (%)"), ["method", *table["columns"]],
               [[row["method"], *(_cell(row.get(c)) for c in table["columns"])] for row in table["rows"]])]
    if table.get("settings"):
        tables.append(("Settings (each method's reference unless overridden)",
                       ["method", "optimizer", "model reported", "training augmentation"],
                       [[r["method"], r["optimizer"], r["selection"], r["augmentation"]] for r in table["settings"]]))
    page = report.write_tables(out_dir, f"vlkit adapt: {protocol} results", list(header.items()), tables,
                               [f"Note: {n}" for n in table.get("notes", [])] + [f"Tables: {md.name}, {js.name}"])
    return {"markdown": md, "json": js, "report": page}
