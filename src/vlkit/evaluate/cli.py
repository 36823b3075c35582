"""``vlkit eval``: parse the command line, call :func:`vlkit.evaluate.run`, write the report.

Parsing only: the evaluation is :func:`vlkit.evaluate.run`, the page is
:func:`vlkit.report.write`. :func:`add_cli` registers the subcommand on ``vlkit``'s
subparsers; nothing heavy is imported until the command runs, so ``vlkit --help`` stays fast.

    vlkit eval preset:tiny-clip --data digits --suite zeroshot,retrieval,calibration,conformal
    vlkit eval openclip:ViT-B-32@laion2b_s34b_b79k --data openmoji:subgroup --suite zeroshot \\
        --option zeroshot.split=val --out runs/eval-vitb32
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The registered suites, for --help (tests/report checks this against vlkit.evaluate.EVALUATORS;
# listing them here keeps `vlkit --help` from importing torch).
SUITES = ("calibration", "compositional", "conformal", "linear_probe", "retrieval", "reward", "robustness",
          "zeroshot")

DESCRIPTION = """\
Evaluate a dual encoder on a dataset with one or more suites, write metrics.json,
artifacts.json, metrics.md and report.html in --out (a folder holding another run's results
is refused unless --overwrite), and print the metrics with their chance levels. Image
features are cached (keyed by model, data and transform) and text features too (keyed by
model and texts), so a second evaluation of the same model and data skips both towers."""

EPILOG = """\
examples:
  vlkit eval preset:tiny-clip --data digits --suite zeroshot,retrieval
  vlkit eval preset:moji-lit-s --data openmoji:subgroup --suite zeroshot,calibration,conformal \\
      --option conformal.alpha=0.05 --option calibration.n_bins=10 --out runs/eval-moji
  vlkit eval runs/moji-lit/model --data openmoji --suite retrieval --split val

Suite options (--option SUITE.KEY=VALUE, values read as YAML, e.g. retrieval.ks=[1,5]) are
the fields of each suite's config; an unknown key lists the valid ones."""


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``vlkit eval`` on the top-level subparsers; returns its parser."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model (zero-shot, retrieval, calibration, ...) and write an HTML report",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="preset:NAME, openclip:ARCH[@TAG_OR_FILE], hf:NAME_OR_DIR or a saved model "
                                 "directory (see `vlkit models list`)")
    p.add_argument("--data", required=True, metavar="NAME[:VIEW]",
                   help="dataset spec, e.g. digits, openmoji:subgroup, imagefolder=/path (see `vlkit data list`)")
    p.add_argument("--suite", required=True, metavar="S[,S...]",
                   help=f"comma-separated suites: {', '.join(SUITES)}")
    p.add_argument("--split", default=None,
                   help="the split every suite scores (its split or test_split option; default: test)")
    p.add_argument("--out", default="runs/eval", help="run directory for the results (default: runs/eval)")
    p.add_argument("--seed", type=int, default=0, help="seed of random splits and samples (default: 0)")
    p.add_argument("--option", action="append", default=[], metavar="SUITE.KEY=VALUE",
                   help="a suite option, repeatable, e.g. conformal.alpha=0.05")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset option, repeatable, e.g. skin_tones=false for openmoji (see `vlkit data list`)")
    p.add_argument("--batch-size", type=int, default=64, help="images encoded at once (default: 64)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: the model's)")
    p.add_argument("--no-cache", action="store_true", help="encode images and texts again instead of using the feature cache")
    p.add_argument("--title", default=None, help="report heading (default: MODEL on DATA)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (without it such a folder is refused)")
    p.set_defaults(func=run_eval)
    return p


def parse_options(items: list[str]) -> dict[str, dict]:
    """``["conformal.alpha=0.05", ...]`` -> ``{"conformal": {"alpha": 0.05}}``."""
    from ..config import parse_override
    from ..errors import UserError

    options: dict[str, dict] = {}
    for item in items:
        path, value = parse_override(item)
        if len(path) != 2 or not all(path):
            raise UserError(f"--option {item!r} must be SUITE.KEY=VALUE; write e.g. conformal.alpha=0.05")
        options.setdefault(path[0], {})[path[1]] = value
    return options


def parse_data_options(items: list[str]) -> dict:
    """``["skin_tones=false"]`` -> ``{"skin_tones": False}`` (values parsed as YAML scalars)."""
    from ..config import parse_override
    from ..errors import UserError

    options = {}
    for item in items:
        path, value = parse_override(item)
        if len(path) != 1 or not path[0]:
            raise UserError(f"--data-option {item!r} must be KEY=VALUE; write e.g. skin_tones=false")
        options[path[0]] = value
    return options


def run_eval(args: argparse.Namespace) -> int:
    from .. import report
    from ..errors import UserError
    from .runner import run

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    options = parse_options(args.option)
    results = run(args.model, args.data, args.suite, out_dir=args.out, seed=args.seed, options=options,
                  split=args.split, batch_size=args.batch_size, device=args.device, cache=not args.no_cache,
                  data_options=parse_data_options(args.data_option), overwrite=args.overwrite, title=args.title)
    path = Path(args.out) / report.REPORT_FILE
    print_table(results)
    out = Path(args.out)
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'artifacts.json'}")
    print(f"report: {path}")
    return 0


def print_table(results: dict) -> None:
    """metric | value | chance, formatted as the report formats them."""
    from ..report import format_chance, format_value, metric_rows

    rows = [(key, format_value(value), format_chance(chance))
            for key, value, chance in metric_rows(results)]
    width = max([len("metric")] + [len(r[0]) for r in rows])
    print(f"{'metric':<{width}}  {'value':>10}  {'chance':>10}")
    for key, value, chance in rows:
        print(f"{key:<{width}}  {value:>10}  {chance:>10}")
