"""The ``vlkit`` command: parse, dispatch, print. No logic lives here.

Every subcommand imports its module lazily so ``vlkit --help`` stays instant. Errors a user can
cause (:class:`vlkit.errors.UserError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from pathlib import Path
from typing import Callable

from . import grammar
from .errors import UserError

Handler = Callable[[argparse.Namespace], int | None]


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="embedded datasets and user data formats")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{list,show,export}")

    q = dsub.add_parser("list", help="list the datasets, their views and splits")
    q.set_defaults(func=_data_list)

    q = dsub.add_parser("show", help="write a contact sheet (images with their captions) as PNG")
    q.add_argument("name", metavar="NAME[:VIEW][@k=v,...]",
                   help="dataset spec with its options, e.g. openmoji:group@skin_tones=false (see `vlkit data list`)")
    q.add_argument("--split", default="train", help="split to show (default: train)")
    q.add_argument("--n", type=int, default=32, help="number of images (default: 32)")
    q.add_argument("--seed", type=int, default=0, help="which images to pick (default: 0)")
    q.add_argument("--out", default=None, help="PNG path (default: NAME-SPLIT.png)")
    q.add_argument("--style", default=None,
                   help="draw the images in one style (openmoji): the same as NAME@style=STYLE; e.g. edges")
    q.add_argument("--styles", default=None, metavar="all|S1,S2,...",
                   help="a grid of the same --n images in several styles (openmoji), one column each")
    q.set_defaults(func=_data_show)

    q = dsub.add_parser("export", help="export a dataset split to a user format")
    q.add_argument("name", metavar="NAME[:VIEW][@k=v,...]",
                   help="dataset spec with its options, e.g. shapes:color@max_objects=1")
    q.add_argument("out", help="output directory")
    q.add_argument("--format", required=True, choices=["webdataset", "captions", "imagefolder"])
    q.add_argument("--split", default="train", help="split to export (default: train)")
    q.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in OUT (only files an export writes; anything else is refused)")
    q.set_defaults(func=_data_export)


def _data_list(args: argparse.Namespace) -> None:
    from . import data

    for info in data.list_datasets():
        views = ", ".join(info["views"]) or "-"
        path = "  (needs a path: NAME=PATH)" if info["needs_path"] else ""
        print(f"{info['name']:<12} views: {views:<36} splits: {', '.join(info['splits'])}{path}")
        print(f"{'':<12} {info['description']}")


def _data_show(args: argparse.Namespace) -> None:
    from . import data
    from .data.show import contact_sheet

    if args.n < 1:  # before the dataset is built
        raise UserError(f"--n must be >= 1, got {args.n}; pass the number of images to show")
    if args.styles:
        from .data.show import style_sheet
        from .data.styles import STYLES, check_style

        names = list(STYLES) if args.styles == "all" else [check_style(s.strip()) for s in args.styles.split(",")]
        sets = {s: data.load(args.name, split=args.split, style=s) for s in names}
        out = args.out or f"{_file_stem(args.name)}-{args.split}-styles.png"
        n = min(args.n, 8) if args.n == 32 else args.n  # the default 32 is for one style: 8 rows here
        path = style_sheet(sets, n=n, out_png=out, seed=args.seed)
        print(f"wrote {path} ({min(n, len(next(iter(sets.values()))))} images in {len(sets)} styles)")
        return
    ds = data.load(args.name, split=args.split, **({"style": args.style} if args.style else {}))
    out = args.out or f"{_file_stem(args.name)}{'-' + args.style if args.style else ''}-{args.split}.png"
    path = contact_sheet(ds, n=args.n, out_png=out, seed=args.seed)
    print(f"wrote {path} ({min(args.n, len(ds))} of {len(ds)} images)")


def _file_stem(spec: str) -> str:
    """A file name for a dataset spec: ``openmoji:group@skin_tones=false`` -> ``openmoji-group_skin_tones-false``."""
    for old, new in ((":", "-"), ("/", "_"), ("@", "_"), ("=", "-"), (",", "_")):
        spec = spec.replace(old, new)
    return spec


def _data_export(args: argparse.Namespace) -> None:
    from . import data
    from .data.export import export

    ds = data.load(args.name, split=args.split)
    out = export(ds, args.format, args.out, overwrite=args.overwrite)
    print(f"wrote {out.n_samples} samples as {args.format} to {out}")


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="model presets and specs")
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="{list,info}")
    q = msub.add_parser("list", help="list the presets and the spec forms")
    q.set_defaults(func=_models_list)
    q = msub.add_parser("info", help="describe a model spec: towers, widths, parameters")
    q.add_argument("spec", help="preset:NAME, openclip:NAME[@TAG_OR_FILE], hf:NAME_OR_DIR or a saved dir")
    q.set_defaults(func=_models_info)


def _models_list(args: argparse.Namespace) -> None:
    from . import models

    for p in models.list_presets():
        print(f"preset:{p['name']:<20} {p['description']}")
    print("\nother specs: openclip:NAME[@TAG_OR_FILE], hf:NAME_OR_DIR, or a directory saved by vlkit")


def _models_info(args: argparse.Namespace) -> None:
    from . import models

    info = models.describe(args.spec)
    print(f"{info['spec']}  ({info['builder']}): embed dim {info['embed_dim']}, image size "
          f"{info['image_size']} px, {info['params']:,} parameters ({info['trainable']:,} trainable)")
    for part, d in info["parts"].items():
        details = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("params", "trainable", "frozen") and v is not None)
        state = "frozen" if d.get("frozen") else "trainable"
        print(f"  {part:<12} {d.get('params', 0):>12,} params  {state:<9} {details}")


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="train or align a dual encoder from a YAML recipe",
        description="Train or align a dual encoder. CONFIG is a YAML recipe (configs/pretrain/); "
        "key=value pairs override its keys, dotted for sections (engine.optim.lr=1e-3).",
        epilog="example: vlkit pretrain moji-lit --data openmoji@skin_tones=false engine.steps=200 "
        "engine.optim.lr=1e-3 out_dir=runs/moji-lit-200",
    )
    p.add_argument("config", help="YAML recipe (configs/pretrain/moji-lit.yaml) or a shipped recipe's name (moji-lit)")
    grammar.add_overrides(p, "dotted overrides of the recipe's keys, e.g. engine.steps=200")
    grammar.add_data(p, "dataset to train on, with its options (sets the recipe's data.name), "
                        "e.g. openmoji@skin_tones=false")
    grammar.add_device(p, default=None, config_key="engine.device")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=_pretrain)


def pretrain_config(args: argparse.Namespace):
    """The resolved recipe. ``--device`` is its ``engine.device``; ``--data NAME@k=v`` its
    ``data.name`` and ``data.options``: the recipe's options stay for the same dataset (the keys
    named replaced) and are dropped for another one."""
    from . import pretrain
    from .data import parse_spec
    from .recipes import recipe_path

    device = [f"engine.device={args.device}"] if args.device else []
    cfg = pretrain.load_config(recipe_path(args.config, "pretrain"), [*device, *args.overrides])
    if args.data:
        name, options = grammar.split_data_spec(args.data)
        same = parse_spec(name)[0] == parse_spec(grammar.split_data_spec(cfg.data.name)[0])[0]
        cfg.data.name, cfg.data.options = name, {**(cfg.data.options if same else {}), **options}
    return cfg


def _pretrain(args: argparse.Namespace) -> None:
    from . import pretrain
    from .engine.distributed import is_main_process

    cfg = pretrain_config(args)
    result = pretrain.run(cfg, resume=args.resume)
    if not is_main_process():  # under torchrun every rank runs this; the summary is printed once
        return
    print(f"trained {result.fit.step} of {result.fit.steps_planned} steps ({result.fit.samples_per_s:.1f} samples/s); "
          f"model saved to {result.model_dir}")
    for key, value in result.metrics.get("metrics", {}).items():
        if isinstance(value, (int, float)):
            print(f"  {key:<40} {value:.4f}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (what `make demo` runs)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 12 training steps and the style shift on 3 styles (about a minute "
                        "once the data is cached; the first run also builds the dataset)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out=args.out, quick=args.quick)


_EXPORT_DESCRIPTION = (
    "Write MODEL in its peer library's format: --to open_clip (models built by open_clip) writes "
    "open_clip_config.json + open_clip_model.safetensors (+ ARCH.json) for "
    "open_clip.create_model_and_transforms('local-dir:OUT'); --to hf writes a save_pretrained folder for hf: "
    "CLIP/SigLIP models, or the Hugging Face text tower (+ text head) of a composed model (the image tower "
    "stays a vlkit model). See docs/interop.md.")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as an open_clip or Hugging Face checkpoint",
                       description=_EXPORT_DESCRIPTION)
    p.add_argument("model", help="preset:NAME, openclip:ARCH[@TAG_OR_FILE], hf:NAME_OR_DIR or a saved model directory")
    p.add_argument("--to", required=True, choices=["open_clip", "hf"], help="target library")
    p.add_argument("out", help="output folder (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="merge a LoRA adapter in PEFT format (as `vlkit adapt --method lora` writes it) first")
    p.set_defaults(func=_export)


_LOAD_HINT = {"open_clip": "open_clip.create_model_and_transforms('local-dir:{out}')",
              "hf": "transformers.AutoModel.from_pretrained('{out}')"}


def _export(args: argparse.Namespace) -> None:
    import json

    from .models.export import MARKER, export

    out = export(args.model, args.to, args.out, overwrite=args.overwrite, adapter=args.adapter)
    info = json.loads((out / MARKER).read_text()).get("hf", {})
    hint = _LOAD_HINT[args.to].format(out=out)
    if "text" in info:
        hint = f"{_LOAD_HINT['hf'].format(out=out / 'text')} (text tower; the image tower stays a vlkit model)"
    print(f"exported {args.model} to {out}; load it with {hint}")


def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache", help="what vlkit keeps in its user cache: sizes, clearing",
        description="vlkit's user cache ($VLKIT_CACHE, else the user cache folder) holds frozen-tower "
        "features (features/, capped at $VLKIT_FEATURE_CACHE_GB gigabytes, default 4, least recently "
        "used evicted first; 0: no cap) and the embedded datasets built at first use (data/). "
        "Everything in it is rebuilt when missing.")
    csub = p.add_subparsers(dest="cache_cmd", required=True, metavar="{info,clear}")
    q = csub.add_parser("info", help="where the cache is, its files and sizes per section, the cap")
    q.set_defaults(func=_cache_info)
    q = csub.add_parser("clear", help="delete cached features (default), datasets, or both",
                        description="Delete a section of the cache; the next run recomputes what it needs "
                        "(features: one encoding pass; data: the embedded datasets are built again).")
    q.add_argument("what", nargs="?", default="features", choices=["features", "data", "all"],
                   help="section to delete (default: features)")
    q.set_defaults(func=_cache_clear)


def _cache_info(args: argparse.Namespace) -> None:
    from . import cache_admin

    print("\n".join(cache_admin.format_info(cache_admin.info())))


def _cache_clear(args: argparse.Namespace) -> None:
    from . import cache_admin

    n, size = cache_admin.clear(args.what)
    print(f"deleted {n} files ({cache_admin.format_size(size)}) from the {args.what} cache")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="vlkit",
        description="Vision-language learning with dual-encoder (CLIP-style) models: "
        "align, adapt, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"vlkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .adapt.cli import add_cli as _add_adapt
    from .evaluate.cli import add_cli as _add_eval

    for add in (_add_demo, _add_pretrain, _add_adapt, _add_eval, _add_data, _add_models, _add_export,
                _add_cache):
        add(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line. ``key=value`` words may come anywhere after the subcommand (also
    after an option, where argparse alone would refuse them): they are the overrides."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    rest = grammar.take_overrides(args, extras)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Every warning prints as one line: vlkit's own ("vlkit: ...") as ``vlkit: warning: ...``,
    a library's as ``warning: Category: first line (file:line)``, without the source line."""
    text = str(message)
    if text.startswith("vlkit: "):
        return f"vlkit: warning: {' '.join(text[len('vlkit: '):].split())}\n"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"warning: {category.__name__}: {first} ({Path(filename).name}:{lineno})\n"


_python_format = warnings.formatwarning


def _disk_full(e: OSError) -> str:
    where = f" while writing {e.filename}" if getattr(e, "filename", None) else ""
    return f"disk full{where}; free some space (or write elsewhere) and run again (--resume continues a training run)"


def main(argv: list[str] | None = None) -> int:
    """Run one command. A UserError or a full disk is one line (status 2); Ctrl-C at any point,
    imports and argument parsing included, is one line (status 130); never a traceback for either."""
    warnings.formatwarning = _one_line_warning
    try:
        return _run(argv)
    finally:
        warnings.formatwarning = _python_format


def _run(argv: list[str] | None) -> int:
    try:
        args = parse_args(argv)
        rc = args.func(args)
    except UserError as e:
        print(f"vlkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"vlkit: error: {_disk_full(e)}", file=sys.stderr)
            return 2
        if not _interrupted(e):
            raise
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as e:
        if not _interrupted(e):
            raise
        print(_INTERRUPTED, file=sys.stderr)  # e.g. torch.save's zip writer failing as Ctrl-C unwinds it
        return 130
    return int(rc or 0)


_INTERRUPTED = "vlkit: interrupted (Ctrl-C); a training run continues from its last checkpoint with --resume"


def _interrupted(e: BaseException) -> bool:
    """Whether ``e`` was raised while a Ctrl-C unwound the stack (a KeyboardInterrupt in its context)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
