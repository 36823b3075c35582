"""``vlkit.report``: one self-contained HTML page per run directory.

    from vlkit import evaluate, report
    evaluate.run("preset:tiny-clip", "digits", ["zeroshot", "retrieval"], out_dir="runs/eval")
    report.write("runs/eval")                    # -> runs/eval/report.html

The page is built from ``metrics.json`` and ``artifacts.json`` (written by
:func:`vlkit.evaluate.run`) and, for a training run, ``metrics.jsonl`` (the engine's log):
metrics with chance levels, training curves (and a warning first when a time budget cut
training short), per-class accuracy (where classes differ), a confusion matrix (up to 20
classes), reliability diagrams, conformal coverage and set size against alpha, retrieval
examples with their images (the evaluated data reloaded with its recorded options). Every
image is an embedded PNG (matplotlib, Agg canvas, 80 dpi) and there is no script, so the file
opens anywhere and can be mailed. OpenMoji images carry their CC BY-SA 4.0 credit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .inputs import OPENMOJI_CREDIT, RunFiles, SplitImages, read_run
from .page import format_chance, format_value, metric_rows, render_page
from .panels import PANELS, Figure, Panel, Section, render_suite
from .restyled import restyled_examples_section

REPORT_FILE = "report.html"


def write(out_dir: str | Path, *, dataset: Any = None, title: str | None = None,
          headline: Sequence[tuple[str, Any, Any]] = (), links: Mapping[str, str | Path] | None = None,
          lead: Sequence[Section] = ()) -> Path:
    """Write ``report.html`` in the run directory ``out_dir`` and return its path.

    ``headline``: ``(label, value, chance)`` rows shown first, above every other number (e.g.
    the demo's unseen-concept retrieval, which lives in a sub-run). ``links``: ``{title: path}``
    of related reports, linked from the top (paths relative to ``out_dir``). ``lead``: more
    sections shown right after the headline (e.g. :func:`suite_sections` of a sub-run).

    ``dataset``: where the retrieval examples' images come from: the evaluated dataset object,
    a ``{split: dataset}`` mapping or a spec string; None loads the spec recorded in
    metrics.json. A dataset whose fingerprint differs from the evaluated one is not used (the
    examples are then listed without images, with the reason). ``title``: the page heading
    (default: "MODEL on DATA").
    """
    from ..engine.checkpoint import atomic_write, clean_temp_files

    run = read_run(out_dir)
    clean_temp_files(run.out_dir)  # a report write killed earlier left its temporary file
    images = SplitImages(dataset, run.data)
    sections: list[Section] = []
    if run.history:
        section = training_section(run.history)
        if section is not None:
            sections.append(section)
    leftovers = {}
    for suite, artifacts in run.artifacts.items():
        if isinstance(artifacts, dict):
            suite_sections, leftovers[suite] = render_suite(suite, artifacts, run, images)
            sections += suite_sections
    top = headline_section(headline, links or {})
    page = render_page(run, sections, leftovers, title, lead=[*([top] if top else []), *lead])
    # a reader never sees half a page; a full disk is one line and keeps the previous page
    return atomic_write(run.out_dir / REPORT_FILE, lambda f: f.write(page.encode("utf-8")), what="report")


def suite_sections(out_dir: str | Path, suite: str) -> list[Section]:
    """The sections one suite of another run directory draws (a sub-run's table, shown on a
    parent page); none where that run has no artifacts of ``suite``."""
    run = read_run(out_dir)
    artifacts = run.artifacts.get(suite)
    if not isinstance(artifacts, dict):
        return []
    return render_suite(suite, artifacts, run, SplitImages(None, run.data))[0]


def write_tables(out_dir: str | Path, title: str, facts: Sequence[tuple[str, Any]],
                 tables: Sequence[tuple[str, list[str], list[list]]], notes: Sequence[str] = ()) -> Path:
    """``report.html`` for a run whose results are tables (``vlkit adapt``): facts, tables, notes."""
    from ..engine.checkpoint import atomic_write
    from .page import render_tables_page

    page = render_tables_page(title, list(facts), list(tables), list(notes))
    return atomic_write(Path(out_dir) / REPORT_FILE, lambda f: f.write(page.encode("utf-8")), what="report")


def headline_section(headline: Sequence[tuple[str, Any, Any]], links: Mapping[str, str | Path]) -> Section | None:
    """The numbers that matter most, and links to the sub-reports, as the page's first section."""
    if not headline and not links:
        return None
    from .page import esc

    parts = []
    if headline:
        rows = "".join(f'<tr><td>{esc(label)}</td><td class="num">{esc(format_value(value))}</td>'
                       f'<td class="num">{esc(format_chance(chance))}</td></tr>' for label, value, chance in headline)
        parts.append('<table><thead><tr><th>metric</th><th class="num">value</th><th class="num">chance</th>'
                     f"</tr></thead><tbody>{rows}</tbody></table>")
    if links:
        items = "".join(f'<li><a href="{esc(Path(path).as_posix())}">{esc(name)}</a></li>'
                        for name, path in links.items())
        parts.append(f"<p>Sub-reports:</p><ul>{items}</ul>")
    return Section("headline", "Headline", html="".join(parts))


def training_section(history: list[dict]) -> Section | None:
    """Loss terms and learning rate against step, from the training log."""
    from . import figures

    png = figures.training_curves(history)
    if png is None:
        return None
    speeds = sorted(r["samples_per_s"] for r in history if isinstance(r.get("samples_per_s"), (int, float)))
    notes = [f"{len(history)} logged steps, last step {history[-1].get('step')}"
             + (f"; median throughput {speeds[len(speeds) // 2]:.1f} samples/s" if speeds else "")]
    return Section("training", "Training curves", [
        Figure("plot-training", png, "training loss and learning rate against step",
               "Every loss term the task returned, and the learning rate, at each logged step.")], notes)


__all__ = ["OPENMOJI_CREDIT", "PANELS", "Figure", "Panel", "REPORT_FILE", "RunFiles", "Section", "SplitImages",
           "format_chance", "format_value", "headline_section", "metric_rows", "read_run", "restyled_examples_section",
           "suite_sections", "training_section", "write", "write_tables"]
