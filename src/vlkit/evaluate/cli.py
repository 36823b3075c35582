"""``vlkit eval``: parse the command line, call :func:`vlkit.evaluate.run`, write the report.

Parsing only: the evaluation is :func:`vlkit.evaluate.run`, the page is
:func:`vlkit.report.write`. :func:`add_cli` registers the subcommand on ``vlkit``'s
subparsers; nothing heavy is imported until the command runs, so ``vlkit --help`` stays fast.

    vlkit eval preset:tiny-clip --data digits --suite zeroshot,retrieval,calibration,conformal
    vlkit eval openclip:ViT-B-32@laion2b_s34b_b79k --data openmoji:subgroup@skin_tones=false \\
        --suite zeroshot zeroshot.split=val --out runs/eval-vitb32

The grammar (trailing SUITE.KEY=VALUE, ``--data NAME@k=v``, ``--device``) is
:mod:`vlkit.grammar`'s, shared with every subcommand; ``--option`` and ``--data-option`` are
older forms that still work and print a note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import grammar

# The registered suites, for --help (tests/report checks this against vlkit.evaluate.EVALUATORS;
# listing them here keeps `vlkit --help` from importing torch).
SUITES = ("calibration", "compositional", "conformal", "linear_probe", "retrieval", "reward", "robustness",
          "style_shift", "zeroshot")

DESCRIPTION = """\
Evaluate a dual encoder on a dataset with one or more suites, write metrics.json,
artifacts.json, metrics.md, report.html and CLIP_benchmark's per-suite result files
(clip_benchmark/, for `clip_benchmark build`) in --out, and print the metrics with their
chance levels. A folder holding another run's results is refused unless --overwrite. Image
features are cached (keyed by model, data and transform) and text features too (keyed by model
and texts), so a second evaluation of the same model and data skips both towers."""

EPILOG = """\
examples:
  vlkit eval preset:tiny-clip --data digits --suite zeroshot,retrieval --out runs/eval-tiny
  vlkit eval preset:moji-lit-s --data openmoji:subgroup@skin_tones=false \\
      --suite zeroshot,calibration,conformal conformal.alpha=0.05 calibration.n_bins=10 --out runs/eval-moji-s
  vlkit eval runs/moji-lit/model --data openmoji --suite retrieval --split val --device cpu --out runs/eval-val
  vlkit eval MODEL --adapter runs/adapt/lora/4shot/seed1/adapter --data DATA --suite zeroshot --out runs/eval-lora
      (MODEL and DATA: those `vlkit adapt --method lora` trained the adapter on)

Suite options (trailing SUITE.KEY=VALUE, values read as YAML, e.g. retrieval.ks=[1,5]) are
the fields of each suite's config; an unknown key lists the valid ones. Dataset options go
after the dataset, --data NAME[:VIEW]@KEY=VALUE,... (see `vlkit data list`). The older
--option SUITE.KEY=VALUE and --data-option KEY=VALUE still work."""


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
    grammar.add_overrides(p, "suite options, e.g. conformal.alpha=0.05 (the fields of each suite's config)")
    grammar.add_data(p, "dataset spec with its options, e.g. digits, openmoji:subgroup@skin_tones=false, "
                        "imagefolder=/path (see `vlkit data list`)", required=True)
    p.add_argument("--suite", required=True, metavar="S[,S...]",
                   help=f"comma-separated suites: {', '.join(SUITES)}")
    p.add_argument("--split", default=None,
                   help="the split every suite scores (its split or test_split option; default: test)")
    p.add_argument("--out", default="runs/eval", help="run directory for the results (default: runs/eval)")
    p.add_argument("--seed", type=int, default=0, help="seed of random splits and samples (default: 0)")
    p.add_argument("--option", action="append", default=[], metavar="SUITE.KEY=VALUE",
                   help="older form of a trailing SUITE.KEY=VALUE (still works)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="older form of --data NAME@KEY=VALUE (still works)")
    p.add_argument("--batch-size", type=int, default=64, help="images encoded at once (default: 64)")
    grammar.add_device(p)
    p.add_argument("--no-cache", action="store_true", help="encode images and texts again instead of using the feature cache")
    p.add_argument("--title", default=None, help="report heading (default: MODEL on DATA)")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="merge a LoRA adapter in PEFT format (adapter_config.json, as `vlkit adapt --method lora` "
                        "or peft writes it) into MODEL before evaluating (docs/interop.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (without it such a folder is refused)")
    p.set_defaults(func=run_eval)
    return p


def parse_options(items: list[str]) -> dict[str, dict]:
    """``["conformal.alpha=0.05", ...]`` -> ``{"conformal": {"alpha": 0.05}}``."""
    return grammar.nest_overrides(items, "SUITE", "conformal.alpha=0.05")


def resolve_args(args: argparse.Namespace) -> tuple[str, dict, dict[str, dict]]:
    """(dataset spec, dataset options, suite options) from the one grammar and its older forms;
    an older form prints one note naming the new one."""
    if args.option:
        grammar.note(f"--option is an older form; write the suite options last: {' '.join(args.option)}")
    options = parse_options([*args.option, *args.overrides])
    old = grammar.data_options(args.data_option)
    spec, data_options = grammar.merge_data_options(args.data, old)
    if old:
        grammar.note(f"--data-option is an older form; write --data {grammar.join_data_spec(spec, data_options)}")
    return spec, data_options, options


def run_eval(args: argparse.Namespace) -> int:
    from .. import report
    from ..errors import UserError
    from .runner import run

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    spec, data_options, options = resolve_args(args)
    model = args.model
    if args.adapter:
        from ..models import load
        from ..models.peft_adapter import apply_lora

        model = apply_lora(load(args.model), args.adapter)
        print(f"merged the LoRA adapter {args.adapter} into {args.model}")
    results = run(model, spec, args.suite, out_dir=args.out, seed=args.seed, options=options,
                  split=args.split, batch_size=args.batch_size, device=args.device, cache=not args.no_cache,
                  data_options=data_options, overwrite=args.overwrite, title=args.title)
    path = Path(args.out) / report.REPORT_FILE
    print_table(results)
    out = Path(args.out)
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'artifacts.json'} and "
          f"{out / 'clip_benchmark'}/ (CLIP_benchmark's result files)")
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
