"""The adaptation table: every method, few-shot and base-to-new, on OpenMoji groups and on digits.

    .venv/bin/python benchmarks/adapt_table.py            # runs/moji-lit/model, 16 shots, seeds 1,2,3
    .venv/bin/python benchmarks/adapt_table.py --model runs/demo/model --seeds 1 --budget 0.02 --methods coop,maple
    .venv/bin/python benchmarks/adapt_table.py --quick    # smoke run: tiny random CLIP on digits, seconds

Everything runs in ONE process through :func:`vlkit.adapt.run`, one call per (method, seed), so a
method that fails with a UserError is recorded (one line) and the others go on. Every call shares
one loaded model and one ``FeatureStore``: the frozen image features of each image and view are
encoded once for all methods, seeds, tasks and protocols. Per task (``--tasks``):

1. ``fewshot``: K shots per class (16) for each seed; top-1 accuracy on the whole test split.
2. ``base2new`` (CoCoOp): labels sorted, the first ceil(n/2) classes are base; train on base at K
   shots, test on base and on new classes; HM = 2BN / (B + N) of the seed means. A task with fewer
   than 2 new classes is skipped, with a note.

Method options come from the shipped recipe for the same data and protocol (else the same dataset
and protocol): cocoop's batch_size 8, the base-to-new ctx_init phrase, ... Where a class has fewer
than K training images the run uses the fallback ``configs/adapt/moji-subgroup-fewshot.yaml``
documents (``allow_fewer``: such classes give all they have), and the table says so. ``zeroshot``
always runs and opens each table (the reference on the same split); a method "beats zero-shot"
when its mean over seeds is above zero-shot's (HM for base2new).

Encodings: images the shared store pushed through the frozen image tower, against what each
(method, seed) run would encode on its own cold cache (its distinct (bank, position) requests).
MaPLe and LoRA on the image tower run the tower every step themselves and are not counted. The
caches live in a temp folder (a cold start, so the count is honest) unless ``--reuse-cache``.
Writes ``<out>/adapt_table.md``, ``<out>/adapt_table.json`` (every number, per seed) and one folder
per run under ``<out>/runs``; prints the markdown and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULTS = {"model": "runs/moji-lit/model", "tasks": "openmoji:group,digits",
            "protocols": "fewshot,base2new", "methods": "all", "shots": 16, "seeds": "1,2,3",
            "budget": 0.1, "views": 10, "threads": 2, "device": "auto", "out": "runs/adapt-table"}
QUICK = {"model": "preset:tiny-clip", "tasks": "digits", "methods": "zeroshot,linear_probe,tip_adapter_f,coop,cocoop,maple,lora",
         "shots": 2, "seeds": "1", "budget": 0.02, "views": 2, "threads": 1, "out": "runs/adapt-table-quick"}
PROTOCOL_NAMES = ("fewshot", "base2new")
MIN_NEW_CLASSES = 2  # base-to-new with a single new class measures nothing


def _csv(text) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"model spec or saved model directory (default {DEFAULTS['model']})")
    p.add_argument("--tasks", help="comma-separated datasets NAME[:VIEW] (default openmoji:group,digits; "
                   "openmoji:subgroup's 98 classes take hours on a CPU)")
    p.add_argument("--protocols", help="comma-separated: fewshot, base2new (default both)")
    p.add_argument("--methods", help="comma-separated registered methods, or all (default); zeroshot always runs")
    p.add_argument("--shots", type=int, help="shots per class (default 16)")
    p.add_argument("--seeds", help="comma-separated seeds (default 1,2,3)")
    p.add_argument("--budget", type=float, help="fraction of each paper's epochs/iterations (default 0.1)")
    p.add_argument("--views", type=int, help="cached augmented views per training image (default 10)")
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.add_argument("--device", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", help=f"output folder (default {DEFAULTS['out']})")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['model']} on {QUICK['tasks']}, {QUICK['shots']} shots, 1 seed, "
                        f"budget {QUICK['budget']}, methods {QUICK['methods']} (explicit flags still win)")
    p.add_argument("--reuse-cache", action="store_true",
                   help="keep the feature caches in $VLKIT_CACHE (faster reruns; encodings then omit earlier runs')")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier table in --out")
    p.add_argument("overrides", nargs="*", metavar="METHOD.key=value", help="method options on top of the recipes'")
    args = p.parse_args(argv)
    for key, value in {**DEFAULTS, **(QUICK if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.quick = False  # resolved into the fields above; the printed command spells them out
    return check_args(p, args)


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Resolve lists and refuse what cannot run, before any model is loaded."""
    from vlkit.adapt.base import build_config, method_names

    known = method_names()
    names = known if args.methods == "all" else _csv(args.methods)
    bad = [m for m in names if m not in known]
    if bad or not names:
        p.error(f"unknown method {', '.join(bad) or '(none given)'}; pick from {', '.join(known)} or all")
    args.methods = ["zeroshot"] + [m for m in dict.fromkeys(names) if m != "zeroshot"]
    args.tasks, args.protocols = _csv(args.tasks), _csv(args.protocols)
    if not args.tasks or not args.protocols or set(args.protocols) - set(PROTOCOL_NAMES):
        p.error(f"--tasks must be non-empty and --protocols a subset of {', '.join(PROTOCOL_NAMES)}")
    try:
        args.seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds or min(args.shots, args.views, args.threads) < 1 or args.budget <= 0:
        p.error("seeds must be non-empty, shots, views and threads >= 1 and budget > 0")
    for text in args.overrides:
        head = text.split("=", 1)[0].split(".")
        if "=" not in text or len(head) != 2 or head[0] not in args.methods:
            p.error(f"override {text!r} is not METHOD.key=value for a selected method ({', '.join(args.methods)})")
        build_config(head[0], method_options(head[0], {}, args.overrides))  # unknown key: UserError listing keys
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command (every setting spelled out) that reproduces this table."""
    parts = [".venv/bin/python", "benchmarks/adapt_table.py"]
    for key in DEFAULTS:
        value = getattr(args, key)
        parts += [f"--{key}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    parts += ["--reuse-cache"] * args.reuse_cache + ["--overwrite"] * args.overwrite
    return shlex.join(parts + list(args.overrides))


# -- settings of one table: recipe options, short classes, base/new classes ----------------------


def recipe_options(data: str, protocol: str) -> tuple[str | None, dict]:
    """(recipe path, its per-method options) of the shipped recipe for this data and protocol, else of
    one for the same dataset and protocol (group base2new borrows subgroup's), else (None, {})."""
    from vlkit import config as vconfig
    from vlkit.recipes import RECIPES

    same_name = []
    for path in sorted((RECIPES / "adapt").glob("*.yaml")):
        cfg = vconfig.read_yaml(path)
        if cfg.get("protocol", "fewshot") != protocol:
            continue
        if cfg.get("data") == data:
            return f"configs/adapt/{path.name}", dict(cfg.get("options") or {})
        if str(cfg.get("data", "")).split(":")[0] == data.split(":")[0]:
            same_name.append((f"configs/adapt/{path.name}", dict(cfg.get("options") or {})))
    return same_name[0] if same_name else (None, {})


def method_options(name: str, recipe: dict, overrides: list[str]) -> dict:
    """The recipe's options for ``name`` with the command line's METHOD.key=value on top."""
    from vlkit import config as vconfig

    opts = dict(recipe.get(name) or {})
    for text in overrides:
        (method, key), value = vconfig.parse_override(text)
        if method == name:
            opts[key] = value
    return opts


def short_classes(data: str, shots: int, class_ids=None) -> tuple[int, int, int]:
    """(classes with fewer than ``shots`` training images, classes, fewest images of a class)."""
    from vlkit.adapt.splits import load_split

    ds = load_split(data, "train")
    counts = np.bincount(ds.targets[ds.targets >= 0], minlength=len(ds.classnames))
    counts = counts[list(class_ids)] if class_ids is not None else counts
    return int((counts < shots).sum()), len(counts), int(counts.min())


def base_new_classes(data: str) -> dict[str, list[int]]:
    """The protocol's base/new class ids (the data layer's sorted-labels split)."""
    from vlkit.adapt.splits import load_split, parse_data
    from vlkit.data import base_new_split

    ds = load_split(data, "train")
    return base_new_split(ds.classnames, key=parse_data(data)[0].replace(":", "-").split("=")[0])


# -- running: one vlkit.adapt.run per (method, seed), one shared store -----------------------------


def counting_store(model, device):
    """A FeatureStore that also records the distinct (bank, position) requests of the current run:
    what that run would encode on a cold cache of its own."""
    from vlkit.adapt.features import FeatureStore

    class CountingStore(FeatureStore):
        requested: dict

        def start_run(self) -> int:
            self.requested = {}
            return self.encoded

        def cold_count(self) -> int:
            return sum(len(s) for s in self.requested.values())

        def _note(self, bank, positions) -> None:
            self.requested.setdefault(bank, set()).update(np.asarray(positions).tolist())

        def eval_features(self, dataset, positions=None):
            self._note((dataset.fingerprint(), "eval"), np.arange(len(dataset)) if positions is None else positions)
            return super().eval_features(dataset, positions)

        def view_features(self, dataset, positions, n_views, transform=None):
            tf = repr(self.train_transform() if transform is None else transform)  # methods crop differently
            for v in range(int(n_views)):
                self._note((dataset.fingerprint(), tf, v), positions)
            return super().view_features(dataset, positions, n_views, transform)

    store = CountingStore(model, device)
    store.start_run()
    return store


def run_one(model, store, args, table: dict, name: str, seed: int, out: Path) -> dict:
    """One method and seed through vlkit.adapt.run; its accuracies, steps, time and encodings."""
    from vlkit.adapt import api

    opts = method_options(name, table["recipe_options"], args.overrides)
    before, t0 = store.start_run(), time.perf_counter()
    res = api.run(name, table["data"], model, store=store, protocol=table["protocol"], shots=[args.shots],
                  seeds=[seed], budget=args.budget, views=args.views, allow_fewer=table["allow_fewer"],
                  options={name: opts} if opts else {}, device=args.device, overwrite=True,
                  out=str(out / f"{name}-seed{seed}"))
    rec = res["records"][0]
    keep = ("test_acc", "base_acc", "new_acc", "val_acc", "steps", "best_epoch", "length", "tuned", "selection",
            "augmentation")
    return {"seed": seed, **{k: rec[k] for k in keep if k in rec}, "options": opts,
            "s": time.perf_counter() - t0, "encoded": store.encoded - before, "cold": store.cold_count()}


def run_table(model, store, args, data: str, protocol: str, out: Path) -> dict:
    """Every method x seed of one task and protocol; rows of mean ± std over seeds."""
    from vlkit.adapt.protocols import stats
    from vlkit.errors import UserError

    recipe, options = recipe_options(data, protocol)
    table = {"data": data, "protocol": protocol, "recipe": recipe, "recipe_options": options, "notes": [],
             "allow_fewer": False, "rows": []}
    ids = None
    if protocol == "base2new":
        classes = base_new_classes(data)
        ids, n_new = classes["base"], len(classes["new"])
        table["classes"] = {"base": len(ids), "new": n_new}
        if n_new < MIN_NEW_CLASSES:
            table["skipped"] = (f"{data} has {len(ids) + n_new} classes: {n_new} new class(es) after the base/new "
                                f"split, fewer than {MIN_NEW_CLASSES}; base-to-new skipped")
            return table
    short, n_cls, fewest = short_classes(data, args.shots, ids)
    if short:
        table["allow_fewer"] = True
        table["notes"].append(f"{short} of {n_cls} {'base ' if ids else ''}classes have fewer than {args.shots} "
                              f"training images (fewest: {fewest}): they give all they have (allow_fewer=true, the "
                              "fallback configs/adapt/moji-subgroup-fewshot.yaml uses)")
    t0 = time.perf_counter()
    for name in args.methods:
        row = {"method": name, "seeds": [], "error": None}
        for seed in args.seeds:
            print(f"  {protocol} {data}: {name} seed {seed} ...", file=sys.stderr, flush=True)
            try:
                row["seeds"].append(run_one(model, store, args, table, name, seed, out))
                print(f"    {row['seeds'][-1]['s']:.1f} s, {row['seeds'][-1].get('steps', 0)} steps",
                      file=sys.stderr, flush=True)
            except UserError as e:  # a method that cannot run here: record why, go on
                row["error"] = f"seed {seed}: {str(e).splitlines()[0]}"
                break
        for key in ("test_acc", "base_acc", "new_acc"):
            if any(key in r for r in row["seeds"]):
                row[key] = stats([r.get(key) for r in row["seeds"]])
        if protocol == "base2new":
            b, n = row.get("base_acc", {}).get("mean"), row.get("new_acc", {}).get("mean")
            row["HM"] = 2 * b * n / (b + n) if b is not None and n is not None and b + n > 0 else None
        table["rows"].append(row)
    table["s"] = time.perf_counter() - t0
    mark_winners(table)
    return table


def mark_winners(table: dict) -> None:
    """``beats``: mean above zeroshot's (test acc; HM and base acc for base2new)."""
    rows = table["rows"]
    zs = next(r for r in rows if r["method"] == "zeroshot")

    def score(row, key):
        v = row.get(key)
        return v.get("mean") if isinstance(v, dict) else v

    keys = ["test_acc"] if table["protocol"] == "fewshot" else ["HM", "base_acc"]
    for row in rows:
        for key in keys:
            mine, ref = score(row, key), score(zs, key)
            row[f"beats_{key}"] = None if mine is None or ref is None else mine > ref
            row[f"delta_{key}"] = None if mine is None or ref is None else mine - ref


# -- markdown ----------------------------------------------------------------------------------------


def pct(cell) -> str:
    if isinstance(cell, dict):
        if cell.get("mean") is None:
            return "n/a"
        m = 100 * cell["mean"]
        return f"{m:.1f} ± {100 * cell['std']:.1f}" if cell["n"] > 1 else f"{m:.1f}"
    return "n/a" if cell is None else f"{100 * cell:.1f}"


def delta(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def yes(value) -> str:
    return "n/a" if value is None else ("**yes**" if value else "no")


def seconds_per_run(row: dict) -> str:
    return f"{np.mean([r['s'] for r in row['seeds']]):.1f}" if row["seeds"] else "-"


def table_markdown(table: dict, args) -> list[str]:
    """One table: heading, settings and notes, rows (zeroshot first), the line of winners."""
    k, seeds = args.shots, ",".join(map(str, args.seeds))
    lines = [f"## {table['protocol']} · {table['data']} · {k} shots · seeds {seeds}", ""]
    if "skipped" in table:
        return lines + [f"Skipped: {table['skipped']}.", ""]
    opts = {m: method_options(m, table["recipe_options"], args.overrides) for m in args.methods}
    opts = ", ".join(f"{m}.{key}={v!r}" for m, o in opts.items() for key, v in o.items()) or "none"
    lines.append(f"- settings: budget {args.budget}, views {args.views}; method options: {opts} "
                 f"(from {table['recipe'] or 'no shipped recipe'}{' + command line' if args.overrides else ''})")
    if table["protocol"] == "fewshot":
        lines.append(f"- metric: top-1 accuracy (%) on the whole test split, mean ± std over {len(args.seeds)} seed(s); "
                     "zeroshot: the same split, no training")
    else:
        c = table["classes"]
        lines.append(f"- classes: {c['base']} base, {c['new']} new (chance on new {100 / c['new']:.0f}%); "
                     f"top-1 accuracy (%), mean ± std over {len(args.seeds)} seed(s); HM of the means")
    lines += [f"- note: {n}" for n in table["notes"]]
    lines.append(f"- time: {table['s']:.0f} s")
    lines.append("")
    if table["protocol"] == "fewshot":
        lines += [f"| method | {k}-shot acc | Δ vs zero-shot | beats zero-shot | s/run |", "|---|---:|---:|:---:|---:|"]
        accs = lambda r: [pct(r.get("test_acc"))]
        versus = lambda r: [delta(r.get("delta_test_acc")), yes(r.get("beats_test_acc"))]
    else:
        lines += ["| method | base | new | HM | Δ HM vs zero-shot | beats zero-shot (HM) | beats zero-shot (base) | s/run |",
                  "|---|---:|---:|---:|---:|:---:|:---:|---:|"]
        accs = lambda r: [pct(r.get("base_acc")), pct(r.get("new_acc")), pct(r.get("HM"))]
        versus = lambda r: [delta(r.get("delta_HM")), yes(r.get("beats_HM")), yes(r.get("beats_base_acc"))]
    for row in table["rows"]:
        cells = accs(row) + (["—"] * len(versus(row)) if row["method"] == "zeroshot" else versus(row))
        if row["error"] and not row["seeds"]:
            cells = [f"failed: {row['error']}"] + [""] * (len(cells) - 1)
        err = f" (stopped, {row['error']})" if row["error"] and row["seeds"] else ""
        lines.append(f"| {row['method']}{err} | " + " | ".join(cells) + f" | {seconds_per_run(row)} |")
    lines += ["", winners_line(table, k), ""]
    lines += ["| method | model reported | training augmentation |", "|---|---|---|"]
    for row in table["rows"]:
        first = row["seeds"][0] if row["seeds"] else {}
        lines.append(f"| {row['method']} | {first.get('selection', '-')} | {first.get('augmentation', '-')} |")
    lines.append("")
    return lines


def winners_line(table: dict, k: int) -> str:
    rows = [r for r in table["rows"] if r["method"] != "zeroshot"]
    if table["protocol"] == "fewshot":
        won = [r["method"] for r in rows if r.get("beats_test_acc")]
        return (f"**Beat zero-shot at {k} shots on {table['data']} (fewshot): {', '.join(won) or 'none'}** "
                f"({len(won)} of {len(rows)})")
    hm = [r["method"] for r in rows if r.get("beats_HM")]
    base = [r["method"] for r in rows if r.get("beats_base_acc")]
    return (f"**Beat zero-shot at {k} shots on {table['data']} (base2new, HM): {', '.join(hm) or 'none'}** "
            f"({len(hm)} of {len(rows)}); on base classes: {', '.join(base) or 'none'}")


def document(args, info: dict, tables: list[dict]) -> str:
    enc = info["encodings"]
    lines = ["# Adaptation table", "",
             f"- model: {args.model} (fingerprint {info['fingerprint']})",
             f"- methods: {', '.join(args.methods)}; {args.shots} shots; seeds {', '.join(map(str, args.seeds))}; "
             f"budget {args.budget} (fraction of each paper's epochs/iterations); views {args.views}",
             f"- one process, one shared FeatureStore; torch {info['torch']}, {args.threads} thread(s), "
             f"device {info['device']}, load average {info['load'][0]} -> {info['load'][1]}", ""]
    for table in tables:
        lines += table_markdown(table, args)
    lines += ["## Time and shared features", ""]
    if info["partial"]:
        lines.append(f"- partial: {info['tables_done']} tables done so far")
    lines += [f"- {t['protocol']} {t['data']}: {t.get('s', 0):.0f} s" for t in tables]
    lines.append(f"- total wall time: {info['total_s']:.0f} s (model load and setup included)")
    lines.append(f"- image encodings by the shared store: {enc['encoded']}; each (method, seed) run on its own cold "
                 f"cache: {enc['cold']}; saved {enc['cold'] - enc['encoded']} "
                 f"({100 * (1 - enc['encoded'] / max(1, enc['cold'])):.0f}%). Not counted: MaPLe and LoRA (vision) "
                 "run the image tower every step" + ("" if not args.reuse_cache else
                                                     "; --reuse-cache: features earlier runs left on disk were read, not encoded"))
    lines += ["", f"Command: `{info['command']}`"]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------------


def claim(out: Path, overwrite: bool) -> None:
    from vlkit.errors import UserError

    if (out / "adapt_table.json").exists() and not overwrite:
        raise UserError(f"{out} already holds an adaptation table; pass --overwrite or choose another --out")
    shutil.rmtree(out / "runs", ignore_errors=True)  # per-run folders of an earlier table
    out.mkdir(parents=True, exist_ok=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    claim(Path(args.out), args.overwrite)
    saved = os.environ.get("VLKIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="vlkit-adapt-table-") as tmp:
        if not args.reuse_cache:
            os.environ["VLKIT_CACHE"] = str(Path(tmp) / "cache")  # cold caches; the user's stay untouched
        try:
            return run_all(args)
        finally:
            if saved is None:
                os.environ.pop("VLKIT_CACHE", None)
            else:
                os.environ["VLKIT_CACHE"] = saved


def run_all(args: argparse.Namespace) -> dict:
    import torch
    from vlkit import models
    from vlkit.adapt.api import resolve_device

    t0, out = time.perf_counter(), Path(args.out)
    torch.set_num_threads(args.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    device = resolve_device(args.device)
    model = models.load(args.model).eval().to(device)
    store = counting_store(model, device)
    info = {"command": command_line(args), "fingerprint": model.fingerprint(), "torch": torch.__version__,
            "device": device.type, "load": [load, load]}
    todo, tables = [(p, d) for p in args.protocols for d in args.tasks], []
    for protocol, data in todo:
        tables.append(run_table(model, store, args, data, protocol, out / "runs" / f"{protocol}-{data.replace(':', '-')}"))
        cold = sum(r["cold"] for t in tables for row in t["rows"] for r in row["seeds"])
        info.update(total_s=time.perf_counter() - t0, encodings={"encoded": store.encoded, "cold": cold},
                    tables_done=f"{len(tables)} of {len(todo)}", partial=len(tables) < len(todo))
        info["load"][1] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        result = write(args, out, info, tables)  # after every table: a long run keeps what it finished
    print(result["markdown"])
    print(f"wrote {out / 'adapt_table.md'} and {out / 'adapt_table.json'}")
    print(f"command: {info['command']}")
    return result


def write(args, out: Path, info: dict, tables: list[dict]) -> dict:
    md = document(args, info, tables)
    result = {**info, "settings": {k: getattr(args, k) for k in [*DEFAULTS, "overrides", "reuse_cache"]},
              "tables": tables, "markdown": md}
    (out / "adapt_table.md").write_text(md)
    (out / "adapt_table.json").write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    from vlkit.errors import UserError

    try:
        main()
    except UserError as e:  # one line, not a traceback
        sys.exit(f"error: {e}")
