"""Retrieval examples on a re-styled drawing: the style-shift suite's examples of one style
(``edges``: the same emoji as line art), drawn with that style's images.

The ``style_shift`` suite keeps, per drawing, the retrieval suite's examples (text queries,
the indices of their top-5 images). A procedural style keeps the samples and their order, so
the evaluated spec reloaded with ``style=NAME`` (``openmoji:concept@style=edges``) gives the
images those indices point at; the grid is :func:`vlkit.report.examples.retrieval_grid`'s.
"""

from __future__ import annotations

from pathlib import Path

from . import examples as _examples
from .inputs import OPENMOJI_CREDIT, read_run
from .panels import Figure, Section


def restyled_examples_section(out_dir: str | Path, suite: str, style: str, n: int = 4) -> Section | None:
    """The first ``n`` text-to-image examples of ``style`` from ``suite`` in the run ``out_dir``,
    with that style's images and the credit of the design shown; None where the run has none."""
    from ..data.styles import check_style

    run = read_run(out_dir)
    artifacts = run.artifacts.get(suite) or {}
    shown = ((artifacts.get("examples") or {}) if isinstance(artifacts, dict) else {}).get(check_style(style))
    if not shown or not run.data.get("spec"):
        return None
    from .. import data

    split = artifacts.get("split", "test")
    options = {**(run.data.get("options") or {}), "style": style}  # the evaluated options, re-styled
    dataset = data.load(run.data["spec"], split=split, **options)
    shown = shown[:n]
    if max(int(i) for ex in shown for i in [*ex["top_images"], ex.get("positive_image", 0)]) >= len(dataset):
        return None  # not the evaluated samples (a design that leaves emoji out)
    meta = dataset.meta_at(0) if run.shows_openmoji else {}
    # OpenMoji's images carry the report's OpenMoji credit; another design (Twemoji) its own line
    credit = OPENMOJI_CREDIT if meta.get("design", "openmoji") == "openmoji" else meta.get("credit")
    credit = credit if run.shows_openmoji else None
    png = _examples.retrieval_grid(shown, dataset, credit)
    spec = f"{run.data['spec']}@" + ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                             for k, v in options.items())
    return Section(f"{suite}-{style}-examples", f"Retrieval examples drawn in style {style}", [
        Figure(f"plot-{suite}-{style}-examples", png, f"retrieval examples, style {style}",
               f"The unseen concepts drawn in style {style} ({spec}, split {split}): each row a name used as "
               "query and its top-5 images (index, cosine score). Green frame: the query's own image "
               "(correct, what recall@k counts); grey: a wrong image.", credit=credit or False)])
