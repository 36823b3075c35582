"""``vlkit.adapt.run``: few-shot adaptation of a dual encoder under one protocol, in one process.

    from vlkit import adapt
    out = adapt.run("coop,kgcoop", "digits", "preset:tiny-clip", shots=[1, 4], seeds=[1, 2],
                    budget=0.1, overrides=["n_ctx=4", "coop.lr=0.01"])
    print(out["paths"]["markdown"].read_text())

Settings come from (later wins) a YAML file (``config=``), keyword fields of
:class:`AdaptConfig`, and ``key=value`` overrides: a key naming an :class:`AdaptConfig` field sets
the run; a bare method key (``n_ctx=4``) goes to every selected method that has it (and must
belong to one); ``METHOD.key=value`` goes to one method. Unknown keys fail with the list of valid ones.
The resolved config is written to ``<out>/adapt_config.yaml`` next to the results, with
``report.html`` (the tables as a page).

A killed run keeps its finished cells (method x shots x seed, each written as it finishes):
rerun the same command into the same ``out`` and they are reused (one line says how many),
the rest are trained. Another config into that ``out`` is refused, naming the keys that
differ, unless ``overwrite=true`` (then the earlier run's folders are replaced).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import config as vconfig
from ..engine.distributed import pick_device
from ..engine.lock import run_dir_lock
from ..errors import UserError
from .base import build_config, get_method, help_field, method_names
from .features import FeatureStore
from .protocols import CELL_FILE, PROTOCOLS, RunContext, get_protocol
from . import results

DEFAULT_SHOTS = {"fewshot": [1, 2, 4, 8, 16]}  # other protocols: 16 shots


@dataclass
class AdaptConfig:
    """One adaptation run: methods x protocol x shots x seeds on one dataset and model."""

    method: list[str] = help_field([], "method names (comma-separated), see `vlkit adapt --list`")
    data: str = help_field("", "dataset NAME[:VIEW][@option=value,...], e.g. openmoji:subgroup")
    model: str = help_field("", "model spec: a saved model directory, preset:NAME, openclip:..., hf:...")
    protocol: str = help_field("fewshot", "fewshot, base2new, cross or domain")
    shots: list[int] | None = help_field(None, "shots per class (default: 1,2,4,8,16 for fewshot, else 16)")
    seeds: list[int] = help_field([1, 2, 3], "few-shot sampling and training seeds")
    targets: list[str] = help_field([], "cross/domain: datasets to test on (domain default: a rendering shift)")
    budget: float = help_field(1.0, "fraction of each paper's epochs/iterations (a 2-core CPU wants ~0.05-0.2)")
    augment: str = help_field(
        "views", "views: V cached augmented views per image (fast); fresh: a new cached view of every image "
                 "each epoch, as the references' loaders (encodes each image once per epoch)")
    views: int = help_field(10, "augment=views: augmented views per training image in the feature cache (Tip-Adapter: 10)")
    aug_scale: list[float] | None = help_field(
        None, "random-resized-crop scale range of the training images (None: each method's reference)")
    flip: bool | None = help_field(
        None, "horizontal flips (None: each method's reference, where the dataset declares flips safe)")
    aug_seed: int = help_field(0, "seed of the augmented views (shared by all seeds, so they are cached once)")
    selection: str = help_field(
        "auto", "model reported: auto (each method's reference), last (final epoch) or val (best validation epoch)")
    val_evals: int = help_field(10, "validation passes per training run for selection=val")
    allow_fewer: bool = help_field(False, "let classes with fewer than K training samples give all they have")
    options: dict = help_field({}, "per-method config: {METHOD: {key: value}}")
    device: str = help_field("auto", "auto, cpu or cuda")
    precision: str = help_field("fp32", "training precision: fp32, bf16, amp or auto")
    feature_batch_size: int = help_field(256, "images per batch when encoding features")
    progress: bool = help_field(True, "show progress: a bar per training run on a terminal, else a line every "
                                      "$VLKIT_PROGRESS_EVERY s; a line per finished cell")
    overwrite: bool = help_field(False, "replace the results and training folders an earlier run with another "
                                        "config left in out (the same config resumes: finished cells are reused)")
    out: str = help_field("runs/adapt", "run directory: tables, resolved config, one folder per method/seed")


def split_overrides(overrides: Sequence[str], methods: Sequence[str]) -> tuple[list[str], dict[str, dict]]:
    """Route ``key=value`` strings to the run config or to method configs (see module docstring)."""
    run_fields = {f.name for f in dataclasses.fields(AdaptConfig)}
    run, per_method = [], {m: {} for m in methods}
    for text in overrides:
        path, value = vconfig.parse_override(text)
        if path[0] in run_fields:
            run.append(text)
        elif len(path) == 1:
            _bare_key(path[0], text, methods)
            for m in methods:
                if path[0] in vconfig.fields_of(get_method(m).Config):
                    per_method[m][path[0]] = value
        elif len(path) == 2 and path[0] in per_method:
            per_method[path[0]][path[1]] = value
        else:
            raise UserError(f"override {text!r}: {path[0]!r} is neither a run setting nor a selected method "
                            f"({', '.join(methods)}); write key=value or METHOD.key=value")
    return run, per_method


def _bare_key(key: str, text: str, methods: Sequence[str]) -> None:
    """A bare method key must belong to at least one selected method (it goes to those that have it)."""
    if not methods:
        raise UserError(f"override {text!r} sets a method key, but no method is selected; pass --method")
    valid = set()
    for m in methods:
        valid |= set(vconfig.fields_of(get_method(m).Config))
    if key not in valid:
        raise UserError(f"unknown key {key!r} for method(s) {', '.join(methods)}; "
                        f"valid keys: {', '.join(sorted(valid))}")


def make_config(config: str | Path | None = None, overrides: Sequence[str] = (), **fields: Any) -> AdaptConfig:
    """The resolved :class:`AdaptConfig` from a YAML file, keyword fields and overrides."""
    if config:
        from ..recipes import recipe_path

        config = recipe_path(config, "adapt")  # a path, or a shipped recipe's name (quick, moji-group-fewshot)
    data = vconfig.read_yaml(config) if config else {}
    data.update({k: v for k, v in fields.items() if v is not None})
    methods = data.get("method") or []
    methods = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if str(m).strip()]
    data["method"] = methods
    run_over, per_method = split_overrides(overrides, methods)
    cfg = vconfig.build(AdaptConfig, vconfig.apply_overrides(data, run_over))
    for name, values in per_method.items():
        if values:
            cfg.options[name] = {**cfg.options.get(name, {}), **values}
    return check(cfg)


def check(cfg: AdaptConfig) -> AdaptConfig:
    """Fail before loading anything: unknown protocol, method or method key, missing data/model."""
    if not cfg.method:
        raise UserError(f"no method given; pass --method NAME (one of {', '.join(method_names())})")
    PROTOCOLS.get(cfg.protocol)
    for name in cfg.method:
        build_config(name, cfg.options.get(name, {}))  # unknown name or key: UserError listing valid ones
    stray = [k for k in cfg.options if k not in cfg.method]
    if stray:
        raise UserError(f"options given for {stray[0]!r}, which is not a selected method ({', '.join(cfg.method)})")
    if not cfg.data:
        raise UserError("no dataset given; pass --data NAME[:VIEW], e.g. --data openmoji:subgroup")
    if not cfg.model:
        raise UserError("no model given; pass --model SPEC, e.g. the directory `vlkit pretrain "
                        "configs/pretrain/moji-lit.yaml` wrote, or preset:tiny-clip")
    if cfg.shots is None:
        cfg.shots = list(DEFAULT_SHOTS.get(cfg.protocol, [16]))
    if not cfg.shots or min(cfg.shots) < 1 or not cfg.seeds:
        raise UserError(f"shots must be positive and seeds non-empty (got shots={cfg.shots}, seeds={cfg.seeds})")
    if cfg.views < 1 or cfg.budget <= 0:
        raise UserError(f"views must be >= 1 and budget > 0 (got views={cfg.views}, budget={cfg.budget})")
    if cfg.selection not in ("auto", "last", "val"):
        raise UserError(f"selection={cfg.selection!r} is not one of auto, last, val")
    if cfg.augment not in ("views", "fresh"):
        raise UserError(f"augment={cfg.augment!r} is not one of views, fresh")
    if cfg.aug_scale is not None and (len(cfg.aug_scale) != 2 or not 0 < cfg.aug_scale[0] <= cfg.aug_scale[1] <= 1):
        raise UserError(f"aug_scale={cfg.aug_scale} must be two numbers with 0 < low <= high <= 1, e.g. [0.08, 1.0]")
    return cfg


def resolve_device(name: str) -> torch.device:
    """The device rule of every subcommand: :func:`vlkit.engine.distributed.pick_device`."""
    return pick_device(name)


def run(method: str | Sequence[str] | None = None, data: str | None = None, model: Any = None, *,
        config: str | Path | None = None, overrides: Sequence[str] = (), store: FeatureStore | None = None,
        **fields: Any) -> dict:
    """Run one protocol for the given methods; write the results table; return it (see module doc).

    ``model`` may be a spec string or a loaded DualEncoder; ``store`` lets several runs in one
    process share the in-memory feature banks (they share the disk cache anyway).
    """
    loaded = None if model is None or isinstance(model, (str, Path)) else model
    spec = str(model) if loaded is None and model is not None else ("<in-memory model>" if loaded is not None else None)
    cfg = make_config(config, overrides, method=method, data=data, model=spec, **fields)
    from .. import models

    device = resolve_device(cfg.device)
    cfg.device = device.type
    dual = loaded if loaded is not None else models.load(cfg.model)
    dual.to(device)
    if store is None or store.model is not dual:
        store = FeatureStore(dual, device, cfg.feature_batch_size, cfg.aug_scale or (0.9, 1.0), cfg.aug_seed)
    store.progress = cfg.progress
    out = Path(cfg.out)
    methods = [(name, build_config(name, cfg.options.get(name, {}))) for name in cfg.method]
    with run_dir_lock(out):  # one run per --out: a second is refused naming the PID, before it writes
        finished = _claim(out, cfg)
        vconfig.save(cfg, out / CONFIG_FILE)
        from ..engine.progress import Progress

        total = len(methods) * len(cfg.seeds) * (len(cfg.shots) if cfg.protocol == "fewshot" else 1)
        if finished:
            print(f"vlkit: resuming the adapt run in {out}: {finished} of {total} cells finished earlier are "
                  "reused (same config); training the rest", file=sys.stderr, flush=True)
        with Progress(total, "adapt", unit="cell", enabled=cfg.progress, bar=False, every_s=0) as grid:
            ctx = RunContext(dual, store, cfg, methods, cfg.data, out, progress=grid, fingerprint=dual.fingerprint())
            table = get_protocol(cfg.protocol)(ctx)
        table["notes"] = ctx.notes + _notes(cfg)
        if ctx.reused:
            table["notes"].append(f"{ctx.reused} of {total} cells were reused from an earlier, interrupted run "
                                  "with the same config")
        table["settings"] = settings(methods, table["records"])
        header = {"data": cfg.data, "model": cfg.model, "model fingerprint": dual.fingerprint(),
                  "shots": ",".join(map(str, cfg.shots)), "seeds": ",".join(map(str, cfg.seeds)),
                  "budget": cfg.budget, "views": cfg.views}
        paths = results.write(out, cfg.protocol, table, header)
    return {"protocol": cfg.protocol, **table, "paths": paths, "config": cfg,
            "features_encoded": store.encoded}


CONFIG_FILE = "adapt_config.yaml"
RESUME_IGNORES = ("progress", "overwrite", "out")  # settings that do not change a cell's result


def _claim(out: Path, cfg: AdaptConfig) -> int:
    """Take ``out`` for this run; returns the finished cells an earlier run with the same config
    left (they are reused). Another config's results are refused unless ``overwrite`` (then
    its folders are removed)."""
    earlier = [out / name for name in cfg.method if (out / name).exists()]
    earlier += [p for p in (out / f"results-{cfg.protocol}.json",) if p.exists()]
    saved = out / CONFIG_FILE
    if not earlier and not saved.is_file():
        return 0
    if cfg.overwrite:
        for path in earlier:
            if path.is_dir():
                shutil.rmtree(path)
        return 0
    # a saved config is checked even when this run's methods are new to the folder: writing ours
    # over another run's config would make that run refuse to resume
    if not saved.is_file():
        raise UserError(f"{out} already holds results of an earlier run ({earlier[0].name}); choose another "
                        "--out or pass overwrite=true to replace them")
    changed = config_changes(vconfig.build(AdaptConfig, vconfig.read_yaml(saved)), cfg)
    if changed:
        raise UserError(f"{out} holds an adapt run with another config ({', '.join(changed)} differ); rerun it "
                        "with the same settings to resume it, choose another --out, or pass overwrite=true")
    return sum(1 for name in cfg.method for _ in (out / name).rglob(CELL_FILE))


def config_changes(old: AdaptConfig, new: AdaptConfig) -> list[str]:
    """The run settings that differ between two configs (those that change results only)."""
    a, b = vconfig.to_dict(old), vconfig.to_dict(new)
    return [k for k in sorted(set(a) | set(b)) if k not in RESUME_IGNORES and a.get(k) != b.get(k)]


def _notes(cfg: AdaptConfig) -> list[str]:
    notes = []
    if cfg.budget != 1.0:
        notes.append(f"training lengths are {cfg.budget:g} x each paper's epochs/iterations (budget)")
    return notes


def describe_optimizer(cfg) -> str:
    """One line for the results: the optimiser settings a method config carries ("-" if none)."""
    name = getattr(cfg, "optimizer", None)
    if name is None:
        return "-"
    parts = [name, f"lr {cfg.lr:g}", f"wd {cfg.weight_decay:g}"]
    if name in ("adamw", "lion", "muon"):
        parts.append(f"betas ({cfg.betas[0]:g}, {cfg.betas[1]:g})")
    if name in ("adamw", "muon"):
        parts.append(f"eps {cfg.eps:g}")
    if name in ("sgd", "muon"):
        parts.append(f"momentum {cfg.momentum:g}")
    return ", ".join(parts) + f"; {cfg.schedule}"


def settings(methods: Sequence[tuple[str, Any]], records: Sequence[dict]) -> list[dict]:
    """Per method: its optimiser, the model reported and the augmentation, as the runs recorded them."""
    rows = []
    for name, cfg in methods:
        mine = [r for r in records if r["method"] == name]
        pick = lambda key: "; ".join(dict.fromkeys(str(r[key]) for r in mine if r.get(key))) or "-"  # noqa: E731
        rows.append({"method": name, "optimizer": describe_optimizer(cfg), "selection": pick("selection"),
                     "augmentation": pick("augmentation")})
    return rows
