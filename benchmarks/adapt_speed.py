"""Adaptation training speed: vlkit's shared feature cache against re-encoding the images every step.

    .venv/bin/python benchmarks/adapt_speed.py            # default task, 2.5-3.5 min on 2 CPU cores
    .venv/bin/python benchmarks/adapt_speed.py --model runs/demo/model --methods clip_adapter,linear_probe
    .venv/bin/python benchmarks/adapt_speed.py --model openclip:ViT-B-16 --data openmoji:group --methods coop --no-seeds

What it measures, in one process, same model, data, seed and schedule on both sides:

1. **Seconds per epoch of each method in ``--methods``** (default ``coop,clip_adapter,
   tip_adapter_f``; any trainable method that can train on cached features), trained by the
   engine loop ``vlkit.engine.fit`` with the config ``vlkit.adapt.training.engine_config`` gives:
   - *cached* (vlkit): ``V`` augmented views of each training image are encoded once by the
     frozen image tower (``FeatureStore.view_features``, shared by all methods); each step looks
     its batch up (``FeatureBatches``) and runs the method;
   - *re-encoding* (the reference codes' design): each step loads the batch images, augments
     them, runs the frozen image tower under ``no_grad`` (``Method.image_embeds`` on an
     ``"images"`` batch), then the method.
   Only the batch source differs: the same method class and seeded init, ``prepare`` on the same
   cached views (Tip-Adapter's keys, the probe's statistics: one-time work, as in the references),
   optimizer, schedule, batch size and order (both drawn from (seed, epoch)). ``--steps N`` times
   the first N steps of each side, mean step x steps/epoch (``--steps 0``: whole epochs). Target:
   cached >= 10x faster per epoch. Test accuracy of both sides: last state (Tip-Adapter-F after
   its alpha/beta search on the few-shot validation split, off the clock); near chance for an
   untrained preset, meaningful for a trained ``--model``. The image side (load + augment +
   encode) of each re-encoding step is timed in the loop; caching can win at most
   ``1 / (1 - image share)``: small for CoOp, whose every step runs the text tower forward and
   backward over all class prompts; large for CLIP-Adapter, Tip-Adapter-F and the linear probe,
   which leave both towers frozen (a cached step is a lookup plus a small head).
2. **Cache sharing across seeds**: the fewshot protocol (``vlkit.adapt.run``) for 3 seeds with
   one shared ``FeatureStore`` (cache warm after the first seed) against each seed on a cold
   cache (a fresh store and disk folder, as the reference code re-encodes per run). The method
   there is ``zeroshot`` (training-free): the times are the feature work itself. ``--no-seeds``
   skips this part (with a ViT-B image tower on a CPU it takes longer than part 1).

The reference codes run CLIP's ViT-B/16 or RN50, whose image tower is most of a CoOp step; the
default model's tower is a small CNN. ``--model openclip:ViT-B-16`` (no pretrained tag: random
weights, no download) builds that architecture and shows the ratio the reference design would
see; its accuracies are then near chance on both sides.

Prints the load average (shared machine), a markdown table and the command line. Caches: a temp folder.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = {"model": "preset:moji-lit-s", "data": "openmoji:subgroup", "methods": "coop,clip_adapter,tip_adapter_f",
            "shots": 16, "epochs": 1, "steps": 6, "views": 2, "seed": 1, "threads": 2}


def method_list(text: str) -> list[str]:
    """``--methods``: comma-separated trainable methods (checked against the registry)."""
    from vlkit.adapt.base import get_method, method_names

    trainable = [m for m in method_names() if get_method(m).trainable]
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in trainable]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"not a trainable method: {', '.join(bad) or '(none given)'}; "
                                         f"pick from {', '.join(trainable)}")
    return list(dict.fromkeys(names))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULTS["model"], help="model spec or a trained model directory")
    p.add_argument("--data", default=DEFAULTS["data"], help="dataset NAME[:VIEW] with a labelled view")
    p.add_argument("--methods", type=method_list, default=DEFAULTS["methods"],
                   help="comma-separated methods to compare (trainable, image tower frozen)")
    p.add_argument("--shots", type=int, default=DEFAULTS["shots"], help="shots per class (fewer where a class has fewer)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs of the schedule, both sides")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                   help="optimizer steps timed per side (0: all of --epochs, timed per epoch)")
    p.add_argument("--views", type=int, default=DEFAULTS["views"], help="cached augmented views per training image")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="few-shot sampling and training seed")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="torch threads")
    p.add_argument("--no-cold", dest="cold", action="store_false",
                   help="seed sharing: estimate the cold seeds' work from their image counts instead of running them")
    p.add_argument("--no-seeds", dest="seeds", action="store_false",
                   help="skip part 2 (cache sharing across seeds); with a large --model it encodes the test split "
                        "several times over")
    args = p.parse_args(argv)
    if min(args.shots, args.epochs, args.views, args.threads) < 1 or args.steps < 0:
        p.error("shots, epochs, views and threads must be >= 1 and steps >= 0")
    return args


def command_line(args: argparse.Namespace) -> str:
    """The full command (every setting spelled out) that reproduces this run."""
    parts = [".venv/bin/python", "benchmarks/adapt_speed.py"]
    for key in DEFAULTS:
        value = getattr(args, key)
        parts += [f"--{key}", ",".join(value) if isinstance(value, list) else str(value)]
    return shlex.join(parts + ([] if args.cold else ["--no-cold"]) + ([] if args.seeds else ["--no-seeds"]))


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- 1. each method: cached features against re-encoded images -------------------------------------


def step_timer():
    """An engine Hook recording when the fit starts, each step ends and each epoch ends."""
    from vlkit.engine import Hook

    class StepTimer(Hook):
        def __init__(self):
            self.start, self.steps, self.epochs = 0.0, [], []

        def on_fit_start(self, state):
            self.start = time.perf_counter()

        def on_step_end(self, state):
            self.steps.append(time.perf_counter())

        def on_epoch_end(self, state):
            self.epochs.append(time.perf_counter())

    return StepTimer()


class TimedBatches:
    """A BatchSource timing each batch's production (re-encoding: load + augment; cached: lookup); both sides."""

    def __init__(self, inner):
        self.inner, self.batch_size, self.load = inner, inner.batch_size, []

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, epoch: int, start: int = 0):
        t0 = time.perf_counter()
        for batch in self.inner.batches(epoch, start):
            self.load.append(time.perf_counter() - t0)  # the source's work for this batch
            yield batch
            t0 = time.perf_counter()  # the consumer's step is not the source's time


def time_encoding(method, times: list) -> None:
    """Record the seconds of each frozen image-tower pass the method makes on an ``"images"`` batch."""
    inner = method.image_embeds

    def image_embeds(batch):
        t0, out = time.perf_counter(), inner(batch)
        if "images" in batch:
            times.append(time.perf_counter() - t0)
        return out

    object.__setattr__(method, "image_embeds", image_embeds)  # an instance attribute shadows the method


def tail_mean(xs: list[float]) -> float:
    """Mean of steps 2.. (the first carries start-up), or the only one."""
    return sum(xs[1:]) / len(xs[1:]) if len(xs) > 1 else xs[0]


def seconds_per_epoch(timer, steps_per_epoch: int, whole: bool) -> tuple[float, float, str]:
    """(s/epoch, s/step, how): whole epochs timed (--steps 0), else mean step x steps/epoch (every method)."""
    ends = [timer.start, *timer.steps]
    per_step = tail_mean([b - a for a, b in zip(ends, ends[1:])])
    if whole and timer.epochs:
        marks = [timer.start, *timer.epochs]
        per_epoch = [b - a for a, b in zip(marks, marks[1:])]
        return sum(per_epoch) / len(per_epoch), per_step, f"mean of {len(per_epoch)} whole epoch(s)"
    return per_step * steps_per_epoch, per_step, "mean s/step (steps 2..N) x steps/epoch"


def fresh_store(model, root: Path):
    """A FeatureStore on an empty folder of its own: a cold cache."""
    from vlkit.adapt.features import FeatureStore

    store = FeatureStore(model, "cpu")
    store.root = root
    root.mkdir(parents=True)
    return store


def train_side(name: str, side: str, model, task: dict, data, args, run, out: Path) -> dict:
    """Build ``name`` as the protocols do (seeded), prepare it on the cached views, train it on
    ``data``, tune it on validation (off the clock, when it tunes) and score the test split."""
    import torch
    from vlkit.adapt.base import build_method
    from vlkit.adapt.training import AdaptTask, accuracy, engine_config, predict
    from vlkit.engine import fit
    from vlkit.errors import UserError

    tr = task["train"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        method = build_method(name, model, tr.classnames, tr.templates)
    if method.uses_image_tower():
        raise UserError(f"method {name!r} trains through the image tower, so it has no cached side; "
                        "drop it from --methods")
    method.prepare(task["views"], task["labels"])  # one-time (Tip-Adapter keys, probe statistics): both sides
    paper = method.paper_schedule(args.shots).get("epochs", args.epochs)
    ecfg = engine_config(method, data, {"epochs": args.epochs}, args.epochs / paper, args.seed, run)
    if args.steps:
        ecfg.steps = min(args.steps, args.epochs * len(data))  # cut short; the schedule stays the epochs'
    timer, source, encode = step_timer(), TimedBatches(data), []
    if side == "re-encoding":  # the cached side's batches hold no images: nothing to time
        time_encoding(method, encode)
    print(f"  {name} {side}: training ({ecfg.steps or args.epochs * len(data)} steps) ...", file=sys.stderr, flush=True)
    fit(AdaptTask(method), source, ecfg, out / name / side, hooks=[timer])
    s_epoch, s_step, how = seconds_per_epoch(timer, len(data), whole=not args.steps)
    image = [a + b for a, b in zip(source.load, encode)][:len(timer.steps)]  # load + augment + encode, per step
    method.eval()
    tuned = bool(method.tune(task["val_feats"], task["val_labels"])) if "val_feats" in task else False
    acc = accuracy(predict(method, task["test"], task["store"]), torch.as_tensor(task["test"].labels))
    return {"s_epoch": s_epoch, "s_step": s_step, "how": how, "test_acc": 100 * acc, "steps": len(timer.steps),
            "image_s_step": tail_mean(image) if image else 0.0, "tuned": tuned,
            "text_per_step": "text" in method.token_towers()}


def method_comparisons(model, args, work: Path) -> dict:
    """The shared few-shot task and cache, then both sides of each method in ``args.methods``."""
    import torch
    from vlkit.adapt.api import AdaptConfig
    from vlkit.adapt.base import Method, get_method
    from vlkit.adapt.splits import fewshot, load_split, validation, whole
    from vlkit.adapt.training import FeatureBatches, image_batches

    store = fresh_store(model, work / "method-features")
    tr = fewshot(load_split(args.data, "train"), args.shots, args.seed, allow_fewer=True)
    task = {"train": tr, "test": whole(load_split(args.data, "test")), "store": store,
            "labels": torch.as_tensor(tr.labels, dtype=torch.long)}
    store.eval_features(task["test"].dataset, task["test"].positions)  # scoring only: off the clock
    val = validation(load_split(args.data, "val", required=False), args.shots, args.seed)
    if val is not None and len(val.positions) and any(get_method(m).tune is not Method.tune for m in args.methods):
        task["val_feats"] = store.eval_features(val.dataset, val.positions)  # (N_val, D), tuning only
        task["val_labels"] = torch.as_tensor(val.labels)
    run = AdaptConfig(method=list(args.methods), data=args.data, model=args.model, views=args.views, device="cpu")

    t0 = time.perf_counter()
    task["views"] = store.view_features(tr.dataset, tr.positions, args.views)  # (V, N, D): the one-time cache build
    out = {"n_train": len(tr), "n_classes": len(tr.classnames), "build_s": time.perf_counter() - t0,
           "build_images": args.views * len(tr), "methods": {}}
    for name in args.methods:
        batch = get_method(name).Config().batch_size  # the method's own batch size, both sides
        cached = FeatureBatches(task["views"], task["labels"], batch, args.seed)
        res = {"batch": cached.batch_size, "steps_per_epoch": len(cached)}
        res["cached"] = train_side(name, "cached", model, task, cached, args, run, work)
        res["reencode"] = train_side(name, "re-encoding", model, task,
                                     image_batches(tr, store.train_transform(), batch, args.seed), args, run, work)
        out["methods"][name] = res
    return out


# -- 2. the feature cache across seeds --------------------------------------------------------------


def protocol_seed(model, args, store, seed: int, out: Path) -> dict:
    """One seed of the fewshot protocol (zeroshot) on ``store``: seconds and images encoded."""
    from vlkit.adapt import api

    before, t0 = store.encoded, time.perf_counter()
    api.run("zeroshot", args.data, model, store=store, protocol="fewshot", shots=[args.shots], seeds=[seed],
            allow_fewer=True, views=args.views, device="cpu", out=str(out))
    return {"seed": seed, "s": time.perf_counter() - t0, "encoded": store.encoded - before}


def cold_images(args, seed: int) -> int:
    """Images a cold cache encodes for one seed: V views of the train shots, val shots, the test split."""
    from vlkit.adapt.splits import fewshot, load_split, validation, whole

    n = args.views * len(fewshot(load_split(args.data, "train"), args.shots, seed, allow_fewer=True))
    val = validation(load_split(args.data, "val", required=False), args.shots, seed)
    return n + (len(val) if val is not None else 0) + len(whole(load_split(args.data, "test")))


def seed_sharing(model, args, work: Path) -> dict:
    seeds = [args.seed + i for i in range(3)]
    shared = fresh_store(model, work / "seeds-shared")
    print("  seeds: shared store ...", file=sys.stderr, flush=True)
    warm = [protocol_seed(model, args, shared, s, work / "seeds" / f"shared-{s}") for s in seeds]
    cold = [dict(warm[0], measured=True)]  # the first seed of the shared run is a cold start
    for s in seeds[1:]:
        if args.cold:
            print(f"  seeds: seed {s} on a cold cache ...", file=sys.stderr, flush=True)
            cold.append(dict(protocol_seed(model, args, fresh_store(model, work / f"seeds-cold-{s}"), s,
                                           work / "seeds" / f"cold-{s}"), measured=True))
        else:  # scale the first seed's time by the images a cold cache would encode
            n = cold_images(args, s)
            cold.append({"seed": s, "s": warm[0]["s"] * n / max(1, warm[0]["encoded"]), "encoded": n, "measured": False})
    return {"warm": warm, "cold": cold}


# -- printing --------------------------------------------------------------------------------------


def image_bound(r: dict) -> tuple[float, float]:
    """(image share of a re-encoding step, the most caching images can win: 1 / (1 - share))."""
    share = min(r["image_s_step"] / r["s_step"], 0.999)
    return share, 1 / (1 - share)


def report_methods(args, feats: dict) -> list[str]:
    """Print the per-method comparison; return its markdown rows."""
    methods, rows = feats["methods"], []
    print(f"\n{args.data}, {args.shots} shots: {feats['n_train']} training images, {feats['n_classes']} classes, "
          f"{args.epochs} epoch(s) of schedule; per method, both sides share the seeded init, batch order, "
          f"optimizer and engine loop: only the image-feature source differs")
    print(f"  one-time cache build (shared by all methods): {feats['build_images']} images (views: {args.views}) "
          f"in {feats['build_s']:.1f} s")
    print(f"  {'method':<14}{'batch':>5}{'steps/ep':>9} | {'cached s/step':>13}{'s/epoch':>8}{'acc %':>7} | "
          f"{'re-enc s/step':>13}{'s/epoch':>8}{'acc %':>7} | {'ratio':>8}{'img share':>10}{'max':>8}")
    for name, m in methods.items():
        c, r = m["cached"], m["reencode"]
        ratio, (share, top) = r["s_epoch"] / c["s_epoch"], image_bound(r)
        print(f"  {name:<14}{m['batch']:>5}{m['steps_per_epoch']:>9} | {c['s_step']:>13.4f}{c['s_epoch']:>8.2f}"
              f"{c['test_acc']:>7.2f} | {r['s_step']:>13.4f}{r['s_epoch']:>8.2f}{r['test_acc']:>7.2f} | "
              f"{ratio:>7.1f}x{100 * share:>9.0f}%{top:>7.1f}x")
        rows.append(f"| {name} ({m['steps_per_epoch']} steps/epoch, batch {m['batch']}) | {c['s_epoch']:.2f} | "
                    f"{r['s_epoch']:.2f} | {ratio:.1f}x | {top:.1f}x | {c['test_acc']:.2f} | {r['test_acc']:.2f} |")
    steps = ", ".join(f"{n} {m['cached']['steps']}" for n, m in methods.items())
    how = (f"mean s/step (steps 2..N) x steps/epoch, N = steps run: {steps}"
           if args.steps else next(iter(methods.values()))["cached"]["how"])
    tuned = [n for n, m in methods.items() if m["cached"]["tuned"]]
    print(f"  s/epoch: {how}; ratio = re-encoding / cached s/epoch (target >= 10x); test acc: last state after "
          f"those steps{''.join(f' ({n} after its search on validation)' for n in tuned)}")
    for name, m in methods.items():
        share, top = image_bound(m["reencode"])
        print(f"  {name}: image side (load + augment + encode) {m['reencode']['image_s_step']:.3f} s = {100 * share:.0f}% "
              f"of a re-encoding step; max possible ratio from caching images = 1/(1 - image share) = {top:.2f}x")
        if m["reencode"]["text_per_step"]:
            print(f"    why: {name} runs the text tower forward and backward over all {feats['n_classes']} class prompts "
                  "every step (the gradient reaches the context through it); caching images cannot remove that")
    if frozen := [n for n, m in methods.items() if not m["reencode"]["text_per_step"]]:
        print(f"  {', '.join(frozen)}: both towers frozen, so a cached step is a feature lookup plus a small head and "
              "the image side is nearly the whole re-encoding step")
    return rows


def report(args, feats: dict, seeds: dict | None, loads: list[str]) -> str:
    """Print the results; return the markdown table."""
    lines = [
        f"| {args.data}, {args.shots} shots, {args.model} | cached (vlkit) s/epoch | re-encoding s/epoch | ratio "
        "| max from caching images 1/(1 - image share) | test acc cached (%) | test acc re-encoding (%) |",
        "|---|---|---|---|---|---|---|",
        *report_methods(args, feats),
        f"| one-time cache build (s, views: {args.views}) | {feats['build_s']:.1f} | - | - | - | - | - |",
    ]
    if seeds is not None:  # part 2 ran (not --no-seeds)
        lines += report_seeds(args, seeds)
    print(f"  load average (1/5/15 min): start {loads[0]}, end {loads[1]}")
    table = "\n".join(lines)
    print(f"\nmarkdown (load average {loads[0]} -> {loads[1]}, {args.threads} torch threads):\n\n{table}\n")
    print(f"command: {command_line(args)}")
    return table


def report_seeds(args, seeds: dict) -> list[str]:
    """Print the seed-sharing comparison; return its table rows."""
    warm_s, cold_s = sum(x["s"] for x in seeds["warm"]), sum(x["s"] for x in seeds["cold"])
    warm_n, cold_n = sum(x["encoded"] for x in seeds["warm"]), sum(x["encoded"] for x in seeds["cold"])
    measured = all(x["measured"] for x in seeds["cold"])
    print(f"\nfewshot protocol (zeroshot), {args.shots} shots, seeds {', '.join(str(x['seed']) for x in seeds['warm'])}")
    print(f"  {'seed':<6} {'shared store s':>14} {'encoded':>8} {'cold cache s':>13} {'encoded':>8}")
    for w, k in zip(seeds["warm"], seeds["cold"]):
        mark = "" if k["measured"] else " (est.)"
        print(f"  {w['seed']:<6} {w['s']:>14.2f} {w['encoded']:>8} {k['s']:>13.2f} {k['encoded']:>8}{mark}")
    print(f"  total  {warm_s:>14.2f} {warm_n:>8} {cold_s:>13.2f} {cold_n:>8}")
    print(f"  shared store saves {cold_n - warm_n} image encodings ({100 * (1 - warm_n / max(1, cold_n)):.0f}%) "
          f"and {cold_s - warm_s:.1f} s ({cold_s / warm_s:.2f}x) over 3 seeds"
          f"{'' if measured else ' (cold seeds 2..3 estimated from image counts)'}")
    how = "measured" if measured else "seeds 2..3 estimated"
    return [
        f"| 3 seeds, images encoded (shared vs cold, {how}) | {warm_n} | {cold_n} | {cold_n / max(1, warm_n):.2f}x "
        "| - | - | - |",
        f"| 3 seeds, seconds (shared vs cold) | {warm_s:.1f} | {cold_s:.1f} | {cold_s / warm_s:.2f}x | - | - | - |",
    ]


def main(argv=None) -> dict:
    args = parse_args(argv)
    saved = os.environ.get("VLKIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="vlkit-adapt-speed-") as tmp:
        os.environ["VLKIT_CACHE"] = str(Path(tmp) / "cache")  # cold caches; the user's stay untouched
        try:
            return run_all(args, Path(tmp))
        finally:
            if saved is None:
                os.environ.pop("VLKIT_CACHE", None)
            else:
                os.environ["VLKIT_CACHE"] = saved


def run_all(args: argparse.Namespace, work: Path) -> dict:
    import torch
    from vlkit import models

    torch.set_num_threads(args.threads)
    loads = [load_avg()]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"load average {loads[0]}; model {args.model}", flush=True)
    model = models.load(args.model).eval()
    feats = method_comparisons(model, args, work)
    seeds = seed_sharing(model, args, work) if args.seeds else None
    loads.append(load_avg())
    table = report(args, feats, seeds, loads)
    return {"features": feats, "methods": feats["methods"], "seeds": seeds, "table": table, "command": command_line(args)}


if __name__ == "__main__":
    from vlkit.errors import UserError

    try:
        main()
    except UserError as e:  # one line, not a traceback
        sys.exit(f"error: {e}")
