"""The evaluation protocols of the CoOp family, each in one process over methods, shots and seeds.

- ``fewshot``: K shots per class (K in ``shots``) for each seed; test accuracy on the whole test
  split; the table gives mean ± std over seeds per method and K.
- ``base2new`` (CoCoOp, arXiv 2203.05557): labels sorted, the first ceil(n/2) classes are base;
  train on base at K shots (16), test on base classes and on new classes (the adapter carried
  over to the new class names); harmonic mean HM = 2BN / (B + N) of the seed means.
- ``cross``: train on the source at K shots, then classify each target dataset (its own classes
  and templates) with the adapted model, no training on it.
- ``domain``: train on the source, test on the same classes rendered differently (targets are
  the source with other load options, e.g. ``openmoji:subgroup@glyph_scale=0.5``; defaults in
  :data:`DOMAIN_SHIFTS`).

Validation (min(K, 4) shots per class of the val split) picks epochs and hyperparameters; the
test split is only ever scored. Methods that learn per-class parameters (linear probe, CSC,
Tip-Adapter) get "n/a" where classes change.

The grid survives a kill: each cell (method x shots x seed) writes its record to
``<cell folder>/cell.json`` (atomically) as it finishes; a rerun with the same config into the
same out dir reuses those cells and trains the rest (:func:`run_cell`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError
from ..registry import Registry
from .base import build_method
from .splits import Split, fewshot, fewshot_of_classes, load_split, parse_data, restrict, validation, whole
from .training import accuracy, predict, train

PROTOCOLS: Registry = Registry("adaptation protocol")

# Domain shifts the embedded datasets offer (a load option that changes the rendering only).
DOMAIN_SHIFTS = {
    "openmoji": "glyph_scale=0.5",  # the same emoji drawn at two thirds of the size
    "shapes": "textures=true",  # striped objects besides solid ones
    "digits": "light_on_dark=true",  # inverted: white digits on black
}


@dataclass
class RunContext:
    model: Any
    store: Any
    run: Any  # AdaptConfig
    methods: list[tuple[str, Any]]  # (name, method config)
    data: str
    out: Path
    notes: list[str] = field(default_factory=list)
    progress: Any = None  # a vlkit.engine.progress.Progress over the grid's cells, or None
    reused: int = 0  # cells finished by an earlier, killed run and reused
    fingerprint: str | None = None  # the frozen model's, recorded with every cell


@dataclass
class Trained:
    method: Any
    info: dict


def stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}


def train_one(ctx: RunContext, name: str, cfg, tr: Split, va: Split | None, shots: int, seed: int,
              out_dir: Path) -> Trained:
    """Build (seeded) and train one method on one split; its adapter is saved under ``out_dir``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        method = build_method(name, ctx.model, tr.classnames, tr.templates, cfg)
    method.to(ctx.store.device)
    info = train(method, tr, va, ctx.store, ctx.run, shots, seed, out_dir)
    method.save(out_dir / "adapter")
    return Trained(method, info)


def score(ctx: RunContext, method, split: Split, classes_changed: bool = False) -> float | None:
    """Test accuracy, carrying the adapter over to the split's classes; None when it cannot."""
    if classes_changed or split.classnames != method.classnames:
        if not method.is_class_agnostic():
            return None
        method = method.transfer(split.classnames, split.templates)
    return accuracy(predict(method, split, ctx.store), torch.as_tensor(split.labels))


def _record(name: str, shots: int, seed: int, t: Trained, **accs) -> dict:
    info = {k: v for k, v in t.info.items() if k not in ("val_curve",)}
    return {"method": name, "shots": shots, "seed": seed, **accs, **info}


CELL_FILE = "cell.json"


def run_cell(ctx: RunContext, folder: Path, label: str, compute: Callable[[], dict]) -> dict:
    """One cell's record: read from ``folder/cell.json`` when an earlier run finished it (same
    model), else computed (a killed cell's leftovers are removed first) and written atomically."""
    from ..engine.checkpoint import atomic_write
    from .results import _jsonable

    done = folder / CELL_FILE
    fingerprint = ctx.fingerprint
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("model_fingerprint") != fingerprint:
            raise UserError(f"{done} was trained on model {saved.get('model_fingerprint')}, not this run's "
                            f"{fingerprint}; choose another --out or pass overwrite=true")
        ctx.reused += 1
        record, label = saved["record"], f"{label} (reused)"
    else:
        if folder.exists():
            shutil.rmtree(folder)  # a cell killed before it finished: trained again from the start
        record = compute()
        text = json.dumps(_jsonable({"model_fingerprint": fingerprint, "record": record}), indent=1)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(done, lambda f: f.write(text.encode("utf-8")), what=CELL_FILE)
    if ctx.progress is not None:
        ctx.progress.update(1, {"last": label})
    return record


@PROTOCOLS.register("fewshot")
def run_fewshot(ctx: RunContext) -> dict:
    train_ds, val_ds = load_split(ctx.data, "train"), load_split(ctx.data, "val", required=False)
    test = whole(load_split(ctx.data, "test"))
    records = []
    for name, cfg in ctx.methods:
        for k in ctx.run.shots:
            for seed in ctx.run.seeds:
                folder = ctx.out / name / f"{k}shot" / f"seed{seed}"

                def cell(name=name, cfg=cfg, k=k, seed=seed, folder=folder):
                    tr = fewshot(train_ds, k, seed, ctx.run.allow_fewer)
                    t = train_one(ctx, name, cfg, tr, validation(val_ds, k, seed), k, seed, folder)
                    return _record(name, k, seed, t, test_acc=score(ctx, t.method, test))

                records.append(run_cell(ctx, folder, f"{name} {k}-shot seed {seed}", cell))
    columns = [f"{k}-shot" for k in ctx.run.shots]
    rows = []
    for name, _ in ctx.methods:
        row = {"method": name}
        for k, col in zip(ctx.run.shots, columns):
            row[col] = stats([r["test_acc"] for r in records if r["method"] == name and r["shots"] == k])
        rows.append(row)
    return {"columns": columns, "rows": rows, "records": records,
            "metric": "top-1 test accuracy (%), mean ± std over seeds"}


@PROTOCOLS.register("base2new")
def run_base2new(ctx: RunContext) -> dict:
    from ..data import base_new_split

    train_ds, val_ds = load_split(ctx.data, "train"), load_split(ctx.data, "val", required=False)
    test = whole(load_split(ctx.data, "test"))
    classes = base_new_split(train_ds.classnames, key=parse_data(ctx.data)[0].replace(":", "-").split("=")[0])
    base, new = classes["base"], classes["new"]
    test_base, test_new = restrict(test, base), restrict(test, new)
    records, k = [], ctx.run.shots[0]
    for name, cfg in ctx.methods:
        for seed in ctx.run.seeds:
            folder = ctx.out / name / "base2new" / f"seed{seed}"

            def cell(name=name, cfg=cfg, seed=seed, folder=folder):
                tr = fewshot_of_classes(train_ds, base, k, seed, ctx.run.allow_fewer)
                va = validation(val_ds, k, seed)
                va = restrict(va, base) if va is not None else None
                t = train_one(ctx, name, cfg, tr, va if va is not None and len(va) else None, k, seed, folder)
                b, n = score(ctx, t.method, test_base), score(ctx, t.method, test_new, classes_changed=True)
                return _record(name, k, seed, t, base_acc=b, new_acc=n)

            records.append(run_cell(ctx, folder, f"{name} base2new seed {seed}", cell))
    rows = []
    for name, _ in ctx.methods:
        mine = [r for r in records if r["method"] == name]
        b, n = stats([r["base_acc"] for r in mine]), stats([r["new_acc"] for r in mine])
        hm = None
        if b["mean"] is not None and n["mean"] is not None and b["mean"] + n["mean"] > 0:
            hm = 2 * b["mean"] * n["mean"] / (b["mean"] + n["mean"])
        rows.append({"method": name, "base": b, "new": n, "HM": hm})
    return {"columns": ["base", "new", "HM"], "rows": rows, "records": records,
            "classes": {"base": [train_ds.classnames[i] for i in base], "new": [train_ds.classnames[i] for i in new]},
            "metric": f"top-1 test accuracy (%) at {k} shots, mean over seeds; HM of the means"}


def _transfer_protocol(ctx: RunContext, targets: list[str], tag: str) -> dict:
    """Train on the source (K shots, each seed); score the source test split and every target's."""
    train_ds, val_ds = load_split(ctx.data, "train"), load_split(ctx.data, "val", required=False)
    tests = {"source": whole(load_split(ctx.data, "test"))}
    for spec in targets:
        tests[spec] = whole(load_split(spec, "test"))
    records, k = [], ctx.run.shots[0]
    for name, cfg in ctx.methods:
        for seed in ctx.run.seeds:
            folder = ctx.out / name / tag / f"seed{seed}"

            def cell(name=name, cfg=cfg, seed=seed, folder=folder):
                tr = fewshot(train_ds, k, seed, ctx.run.allow_fewer)
                t = train_one(ctx, name, cfg, tr, validation(val_ds, k, seed), k, seed, folder)
                accs = {spec: score(ctx, t.method, split) for spec, split in tests.items()}
                return _record(name, k, seed, t, accs=accs)

            records.append(run_cell(ctx, folder, f"{name} {tag} seed {seed}", cell))
    rows = []
    for name, _ in ctx.methods:
        mine = [r for r in records if r["method"] == name]
        row = {"method": name}
        for spec in tests:
            row[spec] = stats([r["accs"][spec] for r in mine])
        means = [row[s]["mean"] for s in targets if row[s]["mean"] is not None]
        row["target mean"] = float(np.mean(means)) if len(means) == len(targets) and means else None
        rows.append(row)
    return {"columns": list(tests) + ["target mean"], "rows": rows, "records": records,
            "metric": f"top-1 test accuracy (%) at {k} shots, mean ± std over seeds"}


@PROTOCOLS.register("cross")
def run_cross(ctx: RunContext) -> dict:
    if not ctx.run.targets:
        raise UserError("the cross protocol needs target datasets; pass --targets shapes:color,digits")
    return _transfer_protocol(ctx, list(ctx.run.targets), "cross")


def domain_targets(data: str, targets: list[str]) -> list[str]:
    """The given targets, or the dataset's default rendering shift (:data:`DOMAIN_SHIFTS`)."""
    if targets:
        return list(targets)
    head, options = parse_data(data)
    name = head.split(":")[0].split("=")[0]
    if name not in DOMAIN_SHIFTS:
        raise UserError(f"no default domain shift for dataset {name!r}; pass --targets {head}@OPTION=VALUE")
    shift = dict(options, **parse_data(f"x@{DOMAIN_SHIFTS[name]}")[1])
    return [f"{head}@" + ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in shift.items())]


@PROTOCOLS.register("domain")
def run_domain(ctx: RunContext) -> dict:
    targets = domain_targets(ctx.data, list(ctx.run.targets))
    ctx.notes.append(f"domain targets: {', '.join(targets)}")
    return _transfer_protocol(ctx, targets, "domain")


def get_protocol(name: str) -> Callable[[RunContext], dict]:
    return PROTOCOLS.get(name)
