"""``vlkit adapt``: parsing only; the work is :func:`vlkit.adapt.run`.

The lead hooks it into ``vlkit.cli`` with ``add_cli(subparsers)``::

    vlkit adapt --method coop --data openmoji:subgroup --model runs/pretrain/moji-lit/model \\
        --shots 1,4,16 --seeds 1,2,3 --budget 0.1 n_ctx=4
    vlkit adapt --method coop --data openmoji:subgroup@skin_tones=false --model preset:tiny-clip --device cpu
    vlkit adapt --list                 # methods, and each method's keys with defaults and help
"""

from __future__ import annotations

import argparse
import sys

from .. import grammar


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "adapt", help="few-shot adaptation (CoOp, CoCoOp, KgCoOp, MaPLe, LoRA, adapters) under a protocol",
        description="Adapt a dual encoder with one or more methods and write one results table "
                    "(markdown + JSON) per protocol. Trailing key=value pairs set method keys "
                    "(n_ctx=4, coop.lr=0.01) or run settings (budget=0.1).",
        epilog="Every method's defaults are its reference code's (optimiser, model reported, augmentation; "
               "see --list). Run settings that override them for every method: selection=last|val "
               "(auto: each reference's), augment=views|fresh (cached views, or a new view per epoch), "
               "aug_scale=[0.08,1.0], flip=true|false (default: each reference's where the dataset "
               "declares flips safe).")
    p.add_argument("--method", help="method name(s), comma-separated (see --list)")
    grammar.add_data(p, "dataset spec with its options, e.g. openmoji:subgroup or "
                        "openmoji:subgroup@skin_tones=false (see `vlkit data list`)")
    p.add_argument("--model", help="model spec: a saved model dir, preset:NAME, openclip:..., hf:...")
    p.add_argument("--protocol", choices=["fewshot", "base2new", "cross", "domain"], default=None)
    p.add_argument("--shots", type=_csv(int), help="shots per class, e.g. 1,2,4,8,16")
    p.add_argument("--seeds", type=_csv(int), help="seeds, e.g. 1,2,3")
    p.add_argument("--targets", type=grammar.split_specs, metavar="SPEC[,SPEC...]",
                   help="cross/domain: test datasets, comma-separated, each with its options "
                        "(shapes:color@textures=true,max_objects=1,digits)")
    p.add_argument("--budget", type=float, help="fraction of each paper's training length (default 1)")
    p.add_argument("--views", type=int, help="augmented views per training image in the cache (default 10)")
    p.add_argument("--config", help="YAML file with AdaptConfig fields, or a shipped recipe's name "
                                    "(configs/adapt/: quick, moji-group-fewshot, ...)")
    p.add_argument("--out", help="run directory (default runs/adapt)")
    p.add_argument("--progress", action="store_true", default=None,
                   help="show progress (the default; progress=false hides it)")
    p.add_argument("--list", action="store_true", help="list the methods and their keys, then exit")
    grammar.add_device(p, default=None, config_key="device")
    grammar.add_overrides(p, "method keys (n_ctx=4, coop.lr=0.01) or run settings (budget=0.1)")
    p.set_defaults(func=_adapt)
    return p


def _adapt(args: argparse.Namespace) -> int:
    from . import api, base

    if args.list:
        for line in describe_methods(base):
            print(line)
        return 0
    out = api.run(args.method, args.data, args.model, config=args.config, overrides=args.overrides,
                  protocol=args.protocol, shots=args.shots, seeds=args.seeds, targets=args.targets,
                  budget=args.budget, views=args.views, out=args.out, progress=args.progress, device=args.device)
    print(out["paths"]["markdown"].read_text(), end="")
    print(f"wrote {out['paths']['markdown']}, {out['paths']['json']} and {out['paths']['report']}")
    return 0


def describe_methods(base) -> list[str]:
    """Each method's first docstring line (its paper), then its keys with defaults and help."""
    lines = []
    for name in base.method_names():
        cls = base.get_method(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        lines.append(f"{name}: {doc[0] if doc else ''}")
        for key, default, text in base.describe_config(cls.Config):
            lines.append(f"    {key} = {default!r}  # {text}")
    return lines
