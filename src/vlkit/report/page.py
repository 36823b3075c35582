"""The HTML page: one self-contained file (inline CSS, images as base64 PNG, no scripts).

The page reads top to bottom like the run: a header (model, data, seed, versions, the
configuration folded in a ``<details>``), the metrics table with chance levels, training
curves when the run trained, one section per evaluator plot, the artifacts no plot used (as
JSON), and a footer with the image credits. Nothing is fetched when it opens, so it can be
mailed or archived as is. Every piece of text from the run is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime, timezone
from typing import Sequence

import yaml

from .inputs import OPENMOJI_CREDIT, RunFiles, is_number
from .panels import Figure, Section

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1000px;
padding:1em 1.5em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.15em .7em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.suite th{background:#f3f5f8;border-top:1px solid #ccd}
table.facts th{color:#555;font-weight:normal;white-space:nowrap}table.small{font-size:.85em}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;margin-top:.2em}.credit{font-size:.8em;color:#444}
.note{font-size:.9em;color:#7a4b00}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:.5em .8em;color:#5a3d00}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
nav{font-size:.9em}nav a{margin-right:.8em}footer{margin-top:2em;border-top:1px solid #ddd;
font-size:.85em;color:#555}
"""


def format_value(value) -> str:
    """How a metric is printed everywhere (the CLI table and the HTML table agree)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def format_chance(value) -> str:
    """A chance level, blank where none is defined (None, or NaN before metrics.json)."""
    return format_value(value) if is_number(value) else ""


def metric_rows(results: dict) -> list[tuple[str, object, object]]:
    """(metric, value, chance or None) in the order the suites ran."""
    chance = results.get("chance") or {}
    return [(key, value, chance.get(key)) for key, value in (results.get("metrics") or {}).items()]


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def default_title(run: RunFiles) -> str:
    return f"{model_label(run.results.get('model') or {})} on {data_label(run.data)}"


def model_label(model: dict) -> str:
    cfg = model.get("config")
    source = cfg.get("source") if isinstance(cfg, dict) else None
    return str(source or model.get("class") or "model")


def data_label(data: dict) -> str:
    label = str(data.get("spec") or data.get("name") or "data")
    view = data.get("view")
    return label if not view or f":{view}" in label else f"{label} (view {view})"


def render_page(run: RunFiles, sections: list[Section], leftovers: dict, title: str | None = None,
                lead: Sequence[Section] = ()) -> str:
    """The page; ``lead`` (the headline numbers, links to sub-reports) comes before the metrics."""
    title = title or default_title(run)
    body = [f"<header><h1>{esc(title)}</h1>", _warnings(run), _facts(run), _config(run), "</header>",
            _nav([*lead, *sections])]
    body += [_section(s) for s in lead]
    body.append(_metrics_table(run.results))
    for section in sections:
        body.append(_section(section))
    body.append(_leftovers(leftovers))
    body.append(_footer(run))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


def _facts(run: RunFiles) -> str:
    results, model, data = run.results, run.results.get("model") or {}, run.data
    splits = ", ".join(f"{s}: {info.get('n')} samples" for s, info in (data.get("splits") or {}).items())
    scale = model.get("logit_scale")
    rows = [
        ("model", f"{model_label(model)} ({model.get('class', '?')}, fingerprint {model.get('fingerprint') or '-'}"
                  + (f", logit scale {scale:.4g})" if is_number(scale) else ")")),
        ("data", data_label(data) + (f"; {splits}" if splits else "")),
        ("seed", results.get("seed")),
        *([("training", training_text(results["training"]))] if isinstance(results.get("training"), dict) else []),
        ("versions", ", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items() if v is not None)),
        ("run directory", run.out_dir.resolve()),
    ]
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{cells}</table>'


def training_text(training: dict) -> str:
    """"25 of 350 steps; time budget 180 s (stopped training early)", from metrics.json's block."""
    text = f"{training.get('steps_done')} of {training.get('steps_planned')} planned steps"
    budget = training.get("time_budget_s")
    if is_number(budget):
        text += f"; time budget {budget:g} s" + (
            f" (stopped training early; lift it with {training.get('lift_budget')})"
            if training.get("stopped_by_budget") else " (not reached)")
    return text


def _warnings(run: RunFiles) -> str:
    """What the reader must know before reading any number (a run cut short by its budget)."""
    training = run.results.get("training") or {}
    if not training.get("warning"):
        return ""
    return f'<p class="warning" id="training-warning">Warning: {esc(training["warning"])}</p>'


def _config(run: RunFiles) -> str:
    parts = {"suites": run.results.get("config") or {}}
    if run.results.get("run_config"):
        parts["training run"] = run.results["run_config"]
    model_cfg = (run.results.get("model") or {}).get("config")
    if model_cfg:
        parts["model"] = model_cfg
    text = yaml.safe_dump(parts, sort_keys=False, default_flow_style=None, allow_unicode=True)
    return f"<details><summary>Configuration</summary><pre>{esc(text)}</pre></details>"


def _nav(sections: list[Section]) -> str:
    links = ['<a href="#metrics">metrics</a>'] + [f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections]
    return "<nav>" + " ".join(links) + "</nav>"


def _metrics_table(results: dict) -> str:
    rows, current = [], None
    for key, value, chance in metric_rows(results):
        suite, _, name = key.partition("/")
        if suite != current:
            rows.append(f'<tr class="suite"><th colspan="3">{esc(suite)}</th></tr>')
            current = suite
        chance_text = format_chance(chance)
        rows.append(f'<tr data-metric="{esc(key)}"><td>{esc(name or key)}</td>'
                    f'<td class="num">{esc(format_value(value))}</td><td class="num">{esc(chance_text)}</td></tr>')
    head = '<tr><th>metric</th><th class="num">value</th><th class="num">chance</th></tr>'
    return (f'<section id="metrics"><h2>Metrics</h2><table><thead>{head}</thead><tbody>{"".join(rows)}'
            "</tbody></table><p class=\"note\">Chance: the expected value of a uniform random guesser "
            "(blank where none is defined). n/a: not defined here (e.g. acc5 with fewer than 5 classes).</p>"
            "</section>")


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    caption = esc(fig.caption)
    if fig.credit:  # True: OpenMoji's credit; a string: the credit line of the design shown
        credit = fig.credit if isinstance(fig.credit, str) else OPENMOJI_CREDIT
        caption += f'<br><span class="credit">{esc(credit)}</span>'
    return (f'<figure id="{esc(fig.id)}"><img src="data:image/png;base64,{data}" alt="{esc(fig.alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _section(section: Section) -> str:
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in section.notes)
    figs = "".join(_figure(f) for f in section.figures)
    return f'<section id="{esc(section.id)}"><h2>{esc(section.title)}</h2>{notes}{figs}{section.html}</section>'


def _leftovers(leftovers: dict, limit: int = 4000) -> str:
    blocks = []
    for suite, rest in leftovers.items():
        if not rest:
            continue
        text = json.dumps(rest, indent=1, default=str)
        if len(text) > limit:
            text = text[:limit] + f"\n... ({len(text) - limit} more characters in artifacts.json)"
        blocks.append(f"<details><summary>{esc(suite)}</summary><pre>{esc(text)}</pre></details>")
    if not blocks:
        return ""
    return '<section id="other-artifacts"><h2>Other artifacts</h2>' + "".join(blocks) + "</section>"


def _footer(run: RunFiles) -> str:
    sources = ["metrics.json"] + (["artifacts.json"] if run.artifacts else []) + (
        ["metrics.jsonl"] if (run.out_dir / "metrics.jsonl").is_file() else [])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Written by vlkit.report from {', '.join(sources)} on {when}."]
    if run.shows_openmoji:
        lines.append(f'<span class="credit">{esc(OPENMOJI_CREDIT)}</span>')
    return "<footer><p>" + "<br>".join(lines) + "</p></footer>"


def render_tables_page(title: str, facts: list[tuple[str, object]], tables: list[tuple[str, list[str], list[list]]],
                       notes: list[str]) -> str:
    """A results page without evaluator artifacts (an adaptation grid): facts, tables, notes."""
    from .panels import table_html

    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    body = [f"<header><h1>{esc(title)}</h1>", f'<table class="facts">{cells}</table>', "</header>"]
    for caption, header, rows in tables:
        body.append(f"<section><h2>{esc(caption)}</h2>{table_html(header, rows)}</section>")
    body += [f'<p class="note">{esc(n)}</p>' for n in notes]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f"<footer><p>Written by vlkit.report on {when}.</p></footer>")
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
