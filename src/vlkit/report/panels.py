"""Panels: each turns one kind of evaluator artifact into a report section.

A panel names the artifact keys it draws (``keys``); the report offers every suite's
artifacts to every registered panel (tried by name; two panels reading the same key tell
their artifacts apart in :meth:`Panel.accepts`), and each that accepts renders a
:class:`Section`. Keys no panel drew are listed as JSON under "Other artifacts", so nothing
an evaluator records is lost. Adding a plot for a new artifact is one class here, registered
by decorator.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..registry import Registry
from . import examples as _examples
from . import figures
from .inputs import OPENMOJI_CREDIT, RunFiles, SplitImages, is_number


@dataclass
class Figure:
    id: str  # stable HTML id, e.g. "plot-zeroshot-per-class"
    png: bytes
    alt: str
    caption: str = ""  # plain text
    credit: bool | str = False  # shows dataset images: True puts OpenMoji's credit under it, a string that line


@dataclass
class Section:
    id: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # plain text
    html: str = ""  # extra markup, already escaped (tables)


@dataclass
class PanelInput:
    suite: str
    artifacts: dict
    run: RunFiles
    images: SplitImages

    def metric(self, name: str):
        value = self.run.results["metrics"].get(f"{self.suite}/{name}")
        return value if is_number(value) else None

    def chance(self, name: str):
        value = (self.run.results.get("chance") or {}).get(f"{self.suite}/{name}")
        return value if is_number(value) else None

    def option(self, name: str, default=None):
        return ((self.run.results.get("config") or {}).get(self.suite) or {}).get(name, default)


class Panel:
    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()

    def accepts(self, artifacts: dict) -> bool:
        return all(artifacts.get(k) for k in self.keys)

    def render(self, inp: PanelInput) -> Section | None:
        raise NotImplementedError


PANELS: Registry[type[Panel]] = Registry("report panel")


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="small"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


@PANELS.register("per_class")
class PerClassPanel(Panel):
    keys = ("per_class_acc1",)

    def accepts(self, artifacts):
        """Only where the bars carry information: more than one class, not all equally accurate."""
        per_class = artifacts.get("per_class_acc1")
        if not isinstance(per_class, dict) or len(per_class) < 2:
            return False
        return len({round(float(v), 12) for v in per_class.values() if is_number(v)}) > 1

    def render(self, inp):
        per_class = inp.artifacts["per_class_acc1"]
        n = len(per_class)
        png = figures.per_class_bars(per_class, inp.chance("acc1"), title=f"{inp.suite}: accuracy per class")
        return Section(f"{inp.suite}-per-class", f"{inp.suite}: per-class accuracy", [
            Figure(f"plot-{inp.suite}-per-class", png, f"per-class accuracy of {inp.suite}, {n} classes",
                   f"Top-1 accuracy of each of the {n} classes present in the scored split, best first.")])


@PANELS.register("confusion")
class ConfusionPanel(Panel):
    keys = ("confusion",)

    def accepts(self, artifacts):
        c = artifacts.get("confusion")
        if not isinstance(c, dict):
            return False
        return len(c.get("classes") or []) > 1 and len(c.get("counts") or []) == len(c["classes"])

    def render(self, inp):
        c = inp.artifacts["confusion"]
        n = len(c["classes"])
        png = figures.confusion_matrix(c["classes"], c["counts"], title=f"{inp.suite}: confusion matrix")
        return Section(f"{inp.suite}-confusion", f"{inp.suite}: confusion matrix", [
            Figure(f"plot-{inp.suite}-confusion", png, f"confusion matrix of {inp.suite}, {n} classes",
                   "Rows: the true class; columns: the predicted class. Colour: the fraction of the true "
                   "class's samples; numbers: sample counts. The diagonal is what was right.")])


@PANELS.register("reliability")
class ReliabilityPanel(Panel):
    keys = ("reliability",)

    def render(self, inp):
        ece = {"before": inp.metric("ece"), "after": inp.metric("ece_ts")}
        png = figures.reliability_diagram(inp.artifacts["reliability"], ece)
        notes = [str(inp.artifacts["protocol"])] if inp.artifacts.get("protocol") else []
        if inp.metric("temperature") is not None:
            notes.append(f"fitted temperature T = {inp.metric('temperature'):.4g} (logits / T)")
        return Section(f"{inp.suite}-reliability", f"{inp.suite}: reliability diagram", [
            Figure(f"plot-{inp.suite}-reliability", png, "reliability diagram",
                   "Bars: accuracy per confidence bin (sample count above each bar); dots: the bin's mean "
                   "confidence. Bars under the diagonal mean over-confidence.")], notes)


@PANELS.register("conformal")
class ConformalPanel(Panel):
    keys = ("curves",)

    def accepts(self, artifacts):
        curves = artifacts.get("curves")
        return isinstance(curves, dict) and any(isinstance(c, dict) and c.get("alpha") for c in curves.values())

    def render(self, inp):
        png = figures.conformal_curves(inp.artifacts["curves"], inp.artifacts.get("alpha"))
        return Section(f"{inp.suite}-curves", f"{inp.suite}: coverage and set size against alpha", [
            Figure(f"plot-{inp.suite}-curves", png, "conformal coverage and set size against alpha",
                   "Split conformal: calibrated on a seeded half of the split, measured on the other half. "
                   "Valid sets keep coverage on or above the dashed 1 - alpha line.")])


@PANELS.register("retrieval_examples")
class RetrievalExamplesPanel(Panel):
    keys = ("examples",)

    def accepts(self, artifacts):
        ex = artifacts.get("examples")
        return isinstance(ex, list) and bool(ex) and isinstance(ex[0], dict) and "top_images" in ex[0]

    def render(self, inp):
        examples = inp.artifacts["examples"]
        split = inp.artifacts.get("split") or inp.option("split", "test")
        dataset = inp.images.get(split)
        title = f"{inp.suite}: text-to-image examples (split {split})"
        shown = [int(i) for ex in examples for i in [*ex["top_images"], ex.get("positive_image", 0)]]
        if dataset is not None and max(shown) >= len(dataset):
            inp.images.notes[split] = f"the dataset given has {len(dataset)} samples, the examples index {max(shown)}"
            dataset = None
        if dataset is None:
            rows = [[ex.get("query"), ex.get("positive_image"),
                     ", ".join(f"#{i}" + (" (own)" if i == ex.get("positive_image") else "") for i in ex["top_images"])]
                    for ex in examples]
            note = f"Images not shown: {inp.images.notes.get(split, 'no dataset')}."
            return Section(f"{inp.suite}-examples", title, notes=[note],
                           html=table_html(["query", "own image", "top images"], rows))
        credit = OPENMOJI_CREDIT if inp.run.shows_openmoji else None
        png = _examples.retrieval_grid(examples, dataset, credit)
        return Section(f"{inp.suite}-examples", title, [
            Figure(f"plot-{inp.suite}-examples", png, "retrieval examples",
                   "Each row: a caption used as query and its top-5 images (index, cosine score). Green frame: "
                   "the query's own image, the one recall@k counts; orange: another image with the same "
                   "caption (a fair match recall@k does not count).", credit=credit is not None)])


@PANELS.register("compositional_examples")
class CompositionalExamplesPanel(Panel):
    keys = ("examples",)

    def accepts(self, artifacts):
        ex = artifacts.get("examples")
        return isinstance(ex, list) and bool(ex) and isinstance(ex[0], dict) and "distractors" in ex[0]

    def render(self, inp):
        rows = [[ex.get("image"), ex.get("kind"), ex.get("true"), " | ".join(map(str, ex.get("distractors", []))),
                 f"{ex['credit']:g}" if is_number(ex.get("credit")) else ""] for ex in inp.artifacts["examples"]]
        return Section(f"{inp.suite}-examples", f"{inp.suite}: probe examples",
                       notes=["Credit 1: the true caption outscores every distractor; 0.5: a tie."],
                       html=table_html(["image", "kind", "true caption", "distractors", "credit"], rows))


@PANELS.register("reward")
class RewardPanel(Panel):
    keys = ("mean_reward_by_degree",)

    def render(self, inp):
        png = figures.reward_by_degree(inp.artifacts["mean_reward_by_degree"], inp.artifacts.get("goal"))
        return Section(f"{inp.suite}-reward", f"{inp.suite}: reward against goal match", [
            Figure(f"plot-{inp.suite}-reward", png, "mean reward by degree of goal match",
                   "A useful reward rises with the number of goal attributes an image satisfies.")])


@PANELS.register("style_shift")
class StyleShiftPanel(Panel):
    """The style-shift suite's per-style table: each headline metric and its ratio to the
    original drawing (issue 18's target: a ratio of at least 0.5 for R@1 on every shift)."""

    keys = ("table",)
    columns = (("text_retrieval_recall@1", "image->name R@1"), ("image_retrieval_recall@1", "name->image R@1"),
               ("acc1", "zero-shot acc1"))

    def accepts(self, artifacts):
        table = artifacts.get("table")
        return isinstance(table, dict) and isinstance(table.get("original"), dict)

    def render(self, inp):
        table = inp.artifacts["table"]
        base = table["original"]
        cols = [(k, label) for k, label in self.columns if k in base]
        header = ["drawing", *[h for _, label in cols for h in (label, "ratio")]]
        rows = []
        for shift, row in table.items():
            cells = [shift]
            for k, _ in cols:
                value = row.get(k)
                ratio = value / base[k] if is_number(value) and is_number(base[k]) and base[k] > 0 else None
                cells += [f"{value:.3f}" if is_number(value) else "n/a",
                          "-" if shift == "original" else (f"{ratio:.2f}" if ratio is not None else "n/a")]
            rows.append(cells)
        note = (f"The same {inp.artifacts.get('split', 'test')} samples drawn in each style or design; ratio: the "
                f"metric over the original drawing's. Retrieval captions: {inp.artifacts.get('captions', 'first')}.")
        return Section(f"{inp.suite}-table", f"{inp.suite}: metrics per drawing style", notes=[note],
                       html=table_html(header, rows))


def render_suite(suite: str, artifacts: dict, run: RunFiles, images: SplitImages) -> tuple[list[Section], dict]:
    """Sections for one suite, and the artifacts no panel drew (for the JSON listing)."""
    inp = PanelInput(suite, artifacts, run, images)
    sections, drawn = [], set()
    for _, panel_cls in PANELS.items():
        panel = panel_cls()
        if any(k in drawn for k in panel.keys) or not panel.accepts(artifacts):
            continue
        section = panel.render(inp)
        if section is not None:
            sections.append(section)
            drawn.update(panel.keys)
    return sections, {k: v for k, v in artifacts.items() if k not in drawn}

