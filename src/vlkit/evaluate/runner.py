"""``vlkit.evaluate.run``: evaluate one model on one dataset with several suites.

The runner resolves the model and the data, builds one :class:`EvalContext` (so image
features are encoded once and shared by every suite), runs each suite under its typed config,
and collects one results dict::

    {
      "metrics":   {"zeroshot/acc1": 0.91, "retrieval/image_retrieval_recall@1": ..., ...},
      "chance":    {"zeroshot/acc1": 0.1, ...},          # where a chance level is known
      "model":     {"class", "fingerprint", "logit_scale", "config"},
      "data":      {"name", "view", "spec", "splits": {split: {"n", "fingerprint"}}},
      "config":    {suite: resolved options},
      "seed":      0,
      "versions":  {"vlkit", "torch", "python", ...},
      "history", "run_config", "training": ...            # only when a trainer passes them
      "artifacts": {suite: {...}},                        # returned; written to artifacts.json
    }

With ``out_dir`` it writes ``metrics.json`` (everything but the artifacts; NaN and infinities
as null, so the file is strict JSON), ``artifacts.json``, ``metrics.md`` and, per suite,
CLIP_benchmark's result file under ``clip_benchmark/`` (see :mod:`.clip_benchmark_format`).
A folder that already holds another run's results is refused (one line, before any work)
unless ``overwrite=True`` (``vlkit eval --overwrite``): results are never silently replaced.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .. import config as _config
from ..engine.distributed import pick_device
from ..engine.lock import run_dir_lock
from ..errors import UserError
from ..grammar import merge_data_options
from . import clip_benchmark_format
from . import (  # noqa: F401  (importing registers the evaluators)
    calibration,
    compositional,
    conformal,
    linear_probe,
    retrieval,
    reward,
    robustness,
    style_shift,
    zeroshot,
)
from .base import EVALUATORS, Evaluator
from .context import EvalContext

VERSIONED = ("vlkit", "torch", "torchvision", "open_clip_torch", "transformers", "numpy", "scikit-learn", "scipy")


def run(
    model,
    data,
    suites: str | Iterable[str],
    out_dir: str | Path | None = None,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    split: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    cache: bool = True,
    data_options: Mapping[str, Any] | None = None,
    history: Any = None,
    config: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    report: bool = True,
    title: str | None = None,
    progress: bool = True,
) -> dict:
    """Run ``suites`` (names in :data:`EVALUATORS`, a list or "a,b") and return the results.

    ``model``: a DualEncoder, or a spec for :func:`vlkit.models.load`. ``data``: a dataset
    spec for :func:`vlkit.data.load` ("shapes:color"), a ``{split: dataset}`` mapping or one
    dataset. ``options``: ``{suite: {option: value}}``, checked against each suite's Config.
    ``split``: the split every suite scores (its ``split`` / ``test_split`` option) unless
    ``options`` says otherwise. ``data_options``: dataset options for a spec (e.g.
    ``{"skin_tones": False}`` for openmoji), as :func:`vlkit.data.load` takes them; a spec may
    carry them itself (``"openmoji@skin_tones=false"``). ``device``: where a model given as a spec
    runs, by the rule of every subcommand (:func:`vlkit.engine.distributed.pick_device`; None:
    auto, the GPU when CUDA is there); a model object moves only when ``device`` is given.
    ``history`` and ``config`` (the training run's log and resolved config, when a trainer calls
    this) are kept in metrics.json as ``history`` / ``run_config``;
    ``training`` (steps done and planned, whether a time budget stopped the run) as ``training``.
    ``overwrite``: replace the results of an earlier run in ``out_dir`` (else refused).
    ``report``: write ``report.html`` (headed ``title``) next to the metrics. ``progress``:
    show the image encoding's progress (a bar on a terminal, a line every few seconds otherwise).
    """
    evaluators = build_evaluators(suites, options, default_split=split)
    if isinstance(data, str):
        data, data_options = merge_data_options(data, data_options)
    # one evaluation per --out: a second one into the same folder is refused (naming the PID)
    # before any work, so the folder's three files always come from one run
    with run_dir_lock(out_dir or ".", enabled=out_dir is not None):
        if out_dir is not None:
            check_out_dir(out_dir, overwrite)
        results = _run(evaluators, model, data, out_dir, seed, batch_size=batch_size, device=device, cache=cache,
                       data_options=data_options, history=history, config=config, training=training,
                       progress=progress)
        if out_dir is not None and report:
            from .. import report as _report

            # the evaluated dataset itself, where one was given: its images need no reload
            given = data if not isinstance(data, (str, Path)) else None
            _report.write(out_dir, dataset=given, title=title)
        return results


RESULT_FILES = ("metrics.json", "artifacts.json", "metrics.md", "report.html")


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an ``out_dir`` holding another run's results (unless ``overwrite``), in one line."""
    found = [name for name in RESULT_FILES if (Path(out_dir) / name).exists()]
    if found and not overwrite:
        raise UserError(f"{out_dir} already holds the results of another run ({found[0]}); choose a new --out "
                        "directory, or pass --overwrite (overwrite=True) to replace them")


def _run(evaluators, model, data, out_dir, seed, *, batch_size, device, cache, data_options, history,
         config, training, progress) -> dict:
    model_name = None
    if isinstance(model, (str, Path)):
        from .. import models

        model_name, model = str(model), models.load(str(model))
        device = device or "auto"
    if device is not None:
        device = pick_device(str(device))
        if callable(getattr(model, "to", None)):
            model.to(device)
    ctx = EvalContext.from_model(model, data, seed=seed, batch_size=batch_size, device=device, cache=cache,
                                 data_options=data_options, model_name=model_name, progress=progress)
    metrics, chance, artifacts = {}, {}, {}
    for name, evaluator in evaluators.items():
        with ctx.for_suite(name):
            result = evaluator(ctx)
        metrics.update({f"{name}/{k}": v for k, v in result.items()})
        chance.update({f"{name}/{k}": v for k, v in result.chance.items()})
        artifacts[name] = result.artifacts
    results = {
        "metrics": metrics,
        "chance": chance,
        "model": ctx.describe_model(),
        "data": {**ctx.describe(), **({"options": dict(data_options)} if data_options else {})},
        "config": {name: _config.to_dict(ev.config) for name, ev in evaluators.items()},
        "seed": seed,
        "versions": versions(),
    }
    if history is not None:
        results["history"] = history
    if config is not None:
        results["run_config"] = dict(config)
    if training is not None:
        results["training"] = dict(training)
    if out_dir is not None:
        write_results(results, artifacts, out_dir)
        clip_benchmark_format.write(results, out_dir, model_name, jsonable)  # beside it: docs/interop.md
    return {**results, "artifacts": artifacts}


def build_evaluators(suites, options=None, default_split: str | None = None) -> dict[str, Evaluator]:
    """Suite names -> configured evaluators; unknown suites or options raise UserError."""
    names = [s.strip() for s in suites.split(",")] if isinstance(suites, str) else [str(s) for s in suites]
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        raise UserError(f"no evaluation suites given; choose from: {', '.join(EVALUATORS.names())}")
    options = dict(options or {})
    stray = [k for k in options if k not in names]
    if stray:
        raise UserError(f"options given for suite {stray[0]!r}, which is not run; suites: {', '.join(names)}")
    evaluators = {}
    for name in names:
        cls = EVALUATORS.get(name)
        opts = dict(options.get(name) or {})
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        scored = next((f for f in ("split", "test_split") if f in fields), None)
        if default_split is not None and scored is not None:
            opts.setdefault(scored, default_split)
        evaluators[name] = cls.from_options(opts)
    return evaluators


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["torch_threads"] = str(torch.get_num_threads())
    return out


# -- files ---------------------------------------------------------------------------------------


def write_results(results: dict, artifacts: dict, out_dir: str | Path) -> Path:
    """metrics.json, artifacts.json and metrics.md in ``out_dir`` (created)."""
    from ..engine.checkpoint import atomic_write

    out = Path(out_dir)
    texts = {"metrics.json": json.dumps(jsonable(results), indent=2, allow_nan=False) + "\n",
             "artifacts.json": json.dumps(jsonable(artifacts), indent=1, allow_nan=False) + "\n",
             "metrics.md": markdown(results)}
    for name, text in texts.items():  # each whole or not at all; a full disk is one line
        atomic_write(out / name, lambda f, text=text: f.write(text.encode("utf-8")), what=name)
    return out


def jsonable(value: Any) -> Any:
    """Plain JSON: tensors and arrays to lists, NaN and infinities to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def markdown(results: dict) -> str:
    """A readable table: one section per suite, metric | value | chance."""
    data, model = results.get("data", {}), results.get("model", {})
    lines = [
        "# Evaluation",
        "",
        f"- data: {data.get('spec') or data.get('name')} (view {data.get('view')})",
        f"- model: {model.get('class')} {model.get('fingerprint') or ''}".rstrip(),
        f"- seed: {results.get('seed')}",
        "",
    ]
    by_suite: dict[str, list[str]] = {}
    for key in results["metrics"]:
        by_suite.setdefault(key.split("/", 1)[0], []).append(key)
    for suite, keys in by_suite.items():
        lines += [f"## {suite}", "", "| metric | value | chance |", "|---|---:|---:|"]
        for key in keys:
            chance = results["chance"].get(key)
            value, chance_text = _fmt(results["metrics"][key]), _fmt(chance) if chance is not None else ""
            lines.append(f"| {key.split('/', 1)[1]} | {value} | {chance_text} |")
        lines.append("")
    return "\n".join(lines)
