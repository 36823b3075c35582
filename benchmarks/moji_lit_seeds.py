"""moji-lit quality over seeds: the recipe's held-out retrieval, mean and std over training seeds.

    .venv/bin/python benchmarks/moji_lit_seeds.py                        # the shipped recipe, seeds 0,1,2
    .venv/bin/python benchmarks/moji_lit_seeds.py engine.optim.lr=0.002  # a variant: any dotted override

One R@1 over 383 held-out emoji moves by about 0.02 between training seeds (the standard
error of a recall over 383 queries is about 0.02 as well), so comparing two recipes on one run
each says little. This script trains ``vlkit pretrain moji-lit`` once per seed (``engine.seed``:
initialisation, batch order and crops), all its steps (``time_budget_s=null``, so a busy
machine changes the time, not the result), and evaluates each model as the recipe does: image
<-> name retrieval on the test concepts, never seen in training. It prints each seed's R@1/5/10
both ways and their mean and std. Runs go to a temporary folder; about 3-4 minutes per seed on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

KEYS = {"image -> name": "retrieval/text_retrieval_recall@{k}", "name -> image": "retrieval/image_retrieval_recall@{k}"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="dotted overrides of the recipe (key=value), e.g. engine.optim.lr=0.002")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    p.add_argument("--recipe", default="moji-lit", help="pretraining recipe name or YAML path (default moji-lit)")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds takes integers, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds is empty")
    if bad := [o for o in args.overrides if "=" not in o]:
        p.error(f"overrides are key=value, got {' '.join(bad)}")
    return args


def row(result: dict) -> dict[str, list[float]]:
    """R@1/5/10 both ways from ``vlkit.evaluate.run``'s result."""
    metrics = result["metrics"]
    return {side: [float(metrics[key.format(k=k)]) for k in (1, 5, 10)] for side, key in KEYS.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from vlkit import pretrain
    from vlkit.recipes import recipe_path

    path = args.recipe if args.recipe.endswith((".yaml", ".yml")) else recipe_path(f"pretrain/{args.recipe}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="vlkit-moji-seeds-") as tmp:
        for seed in args.seeds:
            cfg = pretrain.load_config(path, [*args.overrides, f"engine.seed={seed}", "time_budget_s=null",
                                              "engine.progress=false", f"out_dir={Path(tmp) / str(seed)}"])
            if not cfg.eval.data or "retrieval" not in cfg.eval.suites:
                raise SystemExit(f"error: recipe {args.recipe!r} does not evaluate retrieval (eval.data "
                                 f"{cfg.eval.data!r}, eval.suites {cfg.eval.suites}); set eval.data and add retrieval "
                                 "to eval.suites")
            t0 = time.perf_counter()
            res = pretrain.run(cfg)
            r = row(res.metrics)
            runs.append({"seed": seed, "s": time.perf_counter() - t0, **r})
            print(f"seed {seed}: " + "; ".join(f"{side} R@1/5/10 {v[0]:.3f} / {v[1]:.3f} / {v[2]:.3f}"
                                               for side, v in r.items()) + f" ({runs[-1]['s']:.0f} s)", flush=True)
    summary = {}
    for side in KEYS:
        cols = list(zip(*(r[side] for r in runs)))
        summary[side] = [(statistics.mean(c), statistics.stdev(c) if len(c) > 1 else 0.0) for c in cols]
    print(f"\n{args.recipe} {' '.join(args.overrides)}, seeds {','.join(map(str, args.seeds))}: mean +- std")
    for side, cols in summary.items():
        print(f"  {side:<14} R@1 {cols[0][0]:.3f} +- {cols[0][1]:.3f}   R@5 {cols[1][0]:.3f} +- {cols[1][1]:.3f}"
              f"   R@10 {cols[2][0]:.3f} +- {cols[2][1]:.3f}")
    return {"runs": runs, "summary": summary}


if __name__ == "__main__":
    from vlkit.errors import UserError

    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
