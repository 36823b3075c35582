"""``vlkit pretrain``: build the model, data and objectives of a recipe and train them in the
engine's one loop; save the model, and evaluate it when the recipe asks.

Run directory layout: ``config.yaml`` (resolved), ``metrics.jsonl`` + ``checkpoints/`` (the
engine's), ``model/`` (``DualEncoder.save``), ``metrics.json`` (the evaluation's metrics, or
none when the recipe evaluates nothing, and always a ``training`` block: steps done and
planned, whether the time budget stopped the run) and ``report.html``.

A time budget (``time_budget_s``) that stops training before its planned steps is never
silent: one warning line gives the steps done and planned and the override that lifts it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import config as cfglib
from .. import data as datalib
from .. import models
from ..data.collate import Collate
from ..data.styles import StyleMix, check_style
from ..engine import DatasetBatches, fit
from ..engine.lock import run_dir_lock
from ..engine.progress import warn
from ..engine.loop import check_config as check_engine_config, check_out_dir
from ..errors import UserError
from ..objectives import MomentumEncoder, build as build_objective
from .config import PretrainConfig
from .features import FrozenImageFeatures, FrozenStageViews, FrozenTextFeatures
from .streaming import stream_batches, wants_stream
from .task import ContrastiveModule, ContrastiveTask, TimeBudget


@dataclass
class PretrainResult:
    out_dir: Path
    model_dir: Path
    fit: Any  # vlkit.engine.FitResult
    metrics: dict[str, Any]
    cached: dict[str, Any]  # text, image: cached towers; stage_views: K views of a frozen stage (0: none)


def load_config(path: str | Path | None, overrides=()) -> PretrainConfig:
    return cfglib.load(path, PretrainConfig, overrides)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: PretrainConfig, objective) -> nn.Module:
    model = models.load(cfg.model)
    if cfg.heads:
        model.replace_heads(cfg.heads)
    if cfg.freeze:
        model.freeze(cfg.freeze)
    if cfg.init_logit_scale == "objective":
        first = next(iter(objective.terms.values()))
        with torch.no_grad():
            model.logit_scale.fill_(first.init_logit_scale)
        if first.init_logit_bias is not None:
            _set_logit_bias(model, float(first.init_logit_bias))
    if not model.trainable_parameters():
        raise UserError(f"model {cfg.model!r} has nothing left to train after freezing {cfg.freeze}; "
                        "unfreeze a part or use a preset with trainable heads")
    return model


def _set_logit_bias(model, value: float) -> None:
    """Give the model the bias a sigmoid objective needs, recorded in its config so it reloads."""
    if model.logit_bias is not None:
        with torch.no_grad():
            model.logit_bias.fill_(value)
        return
    builder = model.config.get("builder", "composed")
    if builder == "composed":
        model.config["init_logit_bias"] = value
    elif builder == "openclip":
        model.config.setdefault("model_cfg", {})["init_logit_bias"] = value
    else:
        raise UserError(f"a {builder!r} model has no logit bias to train with a sigmoid objective; "
                        "use a composed or openclip model, or init_logit_scale=model")
    model.logit_bias = nn.Parameter(torch.tensor(value))


class _NoImages:
    """A dataset view whose samples skip the image (the image tower's features are cached)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return datalib.Sample(image=None, captions=self.ds.captions_at(i), label=int(self.ds.targets[i]),
                              labels={}, meta={"index": i})


def _dataset(cfg: PretrainConfig):
    ds = datalib.load(cfg.data.name, split=cfg.data.split, **cfg.data.options)
    if cfg.data.max_samples is not None and cfg.data.max_samples < len(ds):
        ds = ds.subset(list(range(cfg.data.max_samples)))
    if len(ds) == 0:
        raise UserError(f"dataset {cfg.data.name!r} split {cfg.data.split!r} is empty; pick another split")
    return ds


def _bank_texts(cfg: PretrainConfig, ds, text_cache) -> list[str]:
    """The captions a text bank holds: those the data can draw (the first of each, or all)."""
    if ds is None:
        raise UserError("text_negatives: bank needs every caption before training, and streamed shards are read "
                        "only while training; set data.stream=false to index the shards, or use text_negatives: batch")
    if text_cache is None:
        raise UserError("text_negatives: bank needs a locked text tower whose features are cached (LiT); "
                        "freeze the text tower and keep cache_frozen: true, or use text_negatives: batch")
    if cfg.data.caption == "all":
        raise UserError("text_negatives: bank contrasts one caption per image; set data.caption to random or first")
    first = cfg.data.caption == "first"
    return [c for i in range(len(ds)) for c in (ds.captions_at(i)[:1] if first else ds.captions_at(i))]


def check_config(cfg: PretrainConfig) -> None:
    """Every value of a recipe that can be checked without building anything (one line each)."""
    check_engine_config(cfg.engine)
    budget = cfg.time_budget_s
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UserError(f"time_budget_s must be a positive number of seconds (or null: no budget), "
                        f"got {budget!r}")
    if cfg.stage_views < 0:
        raise UserError(f"stage_views must be >= 0 (0: run the frozen stage every step), got {cfg.stage_views}")
    if cfg.data.max_samples is not None and cfg.data.max_samples < 1:
        raise UserError(f"data.max_samples must be >= 1 (or null: every sample), got {cfg.data.max_samples}")
    lo, hi = cfg.data.scale
    if not (0 < lo <= hi <= 1):
        raise UserError(f"data.scale must be two numbers with 0 < low <= high <= 1, got {list(cfg.data.scale)}")
    if not str(cfg.out_dir).strip():
        raise UserError("out_dir is empty; set out_dir to the run directory")
    if not 0 <= cfg.data.style_mix <= 1:
        raise UserError(f"data.style_mix is a probability in [0, 1] (0: no style randomisation), "
                        f"got {cfg.data.style_mix!r}")
    for style in cfg.data.styles or ():
        check_style(style)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 alone writes


def run(cfg: PretrainConfig, resume: bool | str = False) -> PretrainResult:
    """Train ``cfg``'s model on its data with its objectives; returns where everything went.

    Order matters for a refused run: the config is checked, the run directory locked and
    checked ("already holds a run", "nothing to resume") before anything is built or written,
    so a refused run leaves a finished run's files (``config.yaml`` included) as they were.
    """
    check_config(cfg)
    out_dir = Path(cfg.out_dir)
    with run_dir_lock(out_dir, enabled=_is_main()):
        check_out_dir(out_dir, resume)
        return _run(cfg, out_dir, resume)


def _run(cfg: PretrainConfig, out_dir: Path, resume: bool | str) -> PretrainResult:
    _seed_everything(cfg.engine.seed)
    objective = build_objective(cfg.objectives)
    model = build_model(cfg, objective)
    streaming = wants_stream(cfg.data)  # streamed shards: nothing is read before training
    ds = None if streaming else _dataset(cfg)
    needs_tokens = any(k in objective.requires for k in ("image_tokens", "text_tokens"))
    momentum = MomentumEncoder(model, objective_momentum(cfg)) if "momentum_text_features" in objective.requires else None

    # a stream's captions and images are unknown before training: frozen towers run every step
    cache = cfg.cache_frozen and not needs_tokens and not streaming
    cache_text = cache and model.is_frozen("text")
    cache_image = cache and model.is_frozen("visual") and not cfg.data.augment and not cfg.data.style_mix
    progress = cfg.engine.progress
    text_cache = image_cache = None
    if cache_text:
        captions = [c for i in range(len(ds)) for c in ds.captions_at(i)]
        text_cache = FrozenTextFeatures(model, captions, ds.fingerprint(), progress=progress)
    if cache_image:
        image_cache = FrozenImageFeatures(model, ds, progress=progress)

    transform = None if cache_image else model.preprocess(train=cfg.data.augment)
    if transform is not None and cfg.data.augment:
        from ..data.transforms import image_transform

        transform = image_transform(model.image_size, model.mean, model.std, train=True, scale=tuple(cfg.data.scale))
    mix = StyleMix(cfg.data.style_mix, cfg.data.styles, seed=cfg.engine.seed) if cfg.data.style_mix else None
    stage_cache = _stage_views(cfg, model, ds, transform, cache and not cache_image and mix is None)
    if stage_cache is not None:
        transform = None  # the batches carry indices; the cache holds the views
    collate = Collate(transform, caption=cfg.data.caption, seed=cfg.engine.seed, restyle=mix)
    if streaming:
        batches = stream_batches(cfg.data, cfg.engine.batch_size, collate, cfg.engine.seed, cfg.engine.num_workers)
    else:
        batches = DatasetBatches(_NoImages(ds) if cache_image or stage_cache else ds, cfg.engine.batch_size, collate,
                                 seed=cfg.engine.seed, num_workers=cfg.engine.num_workers)

    out_dir.mkdir(parents=True, exist_ok=True)
    if _is_main():
        cfglib.save(cfg, out_dir / "config.yaml")
    bank = _bank_texts(cfg, ds, text_cache) if "text_bank" in objective.requires else None
    task = ContrastiveTask(ContrastiveModule(model, objective, momentum), text_cache, image_cache, bank, stage_cache)
    budget = TimeBudget(cfg.time_budget_s) if cfg.time_budget_s else None
    # model/ (DualEncoder.save) is what users load; the engine's own weights file would repeat it
    engine_cfg = dataclasses.replace(cfg.engine, save_safetensors=False)
    model.train()  # loading gives eval mode; frozen parts stay in eval (DualEncoder.train)
    result = fit(task, batches, engine_cfg, out_dir, resume=resume, hooks=[budget] if budget else [])
    training = training_summary(result, cfg.time_budget_s, budget)
    cached = {"text": cache_text, "image": cache_image, "stage_views": stage_cache.n_views if stage_cache else 0}

    model.eval()
    model_dir = out_dir / "model"
    metrics: dict[str, Any] = {}
    if not _is_main():  # torchrun: rank 0 alone saves and evaluates
        return PretrainResult(out_dir, model_dir, result, metrics, cached)
    if training["stopped_by_budget"]:
        warn(training["warning"])
    model.save(model_dir)
    metrics = _evaluate(cfg, model, out_dir, result, training)
    return PretrainResult(out_dir, model_dir, result, metrics, cached)


def _stage_views(cfg: PretrainConfig, model, ds, transform, allowed: bool):
    """The image tower's frozen stage, cached for ``cfg.stage_views`` augmented views, or None."""
    if not cfg.stage_views:
        return None
    stage = getattr(model.visual, "frozen_stage", None)
    if stage is None:
        raise UserError(f"stage_views {cfg.stage_views} needs an image tower with a frozen pretrained stage "
                        "(convvit with pretrained_stem, e.g. preset:moji-lit-deep); set stage_views: 0")
    if not allowed:  # streamed data, token objectives, cache_frozen: false, or a wholly cached tower
        raise UserError("stage_views needs indexed data, an objective without token features, cache_frozen: "
                        "true, no data.style_mix and an image tower that trains; set stage_views: 0")
    return FrozenStageViews(stage, ds, transform, model.image_size, cfg.stage_views, seed=cfg.engine.seed,
                            progress=cfg.engine.progress)


def training_summary(result, budget_s: float | None, budget: TimeBudget | None) -> dict[str, Any]:
    """What metrics.json and the report say about training: steps done of planned, the budget."""
    stopped = budget is not None and budget.stopped_at is not None
    out = {"steps_done": int(result.step), "steps_planned": int(result.steps_planned),
           "time_budget_s": budget_s, "stopped_by_budget": stopped,
           "lift_budget": "time_budget_s=null" if budget_s else None}
    if stopped:
        out["warning"] = budget_message(out)
    return out


def budget_message(training: dict[str, Any]) -> str:
    """The one line a run stopped by its time budget prints (and the report shows)."""
    b = training["time_budget_s"]
    return (f"the time budget stopped training at step {training['steps_done']} of {training['steps_planned']} "
            f"(time_budget_s={b:g}: {b:g} s of training per run), so the model is undertrained; --resume "
            f"trains {b:g} s more, and the override {training['lift_budget']} lifts the budget")


def _evaluate(cfg: PretrainConfig, model, out_dir: Path, result, training: dict) -> dict[str, Any]:
    """The recipe's evaluation (or a metrics.json with only the training facts), then report.html."""
    from .. import report
    from ..evaluate import run as evaluate
    from ..evaluate.runner import versions, write_results

    run_config = cfglib.to_dict(cfg)
    title = f"vlkit pretrain: {cfg.model} on {cfg.data.name}"
    if cfg.eval.data:  # the run directory is this run's (locked, checked): its results are replaced
        return evaluate(model, cfg.eval.data, cfg.eval.suites, out_dir=out_dir, split=cfg.eval.split,
                        options=cfg.eval.options, data_options=cfg.eval.data_options, history=result.history,
                        config=run_config, training=training, overwrite=True, title=title,
                        progress=cfg.engine.progress)
    # nothing to evaluate: the run directory still gets its metrics.json and report
    metrics = {"metrics": {}, "chance": {}, "model": {"class": type(model).__name__,
                                                     "fingerprint": model.fingerprint(), "config": model.config},
               "data": {"spec": cfg.data.name, "split": cfg.data.split}, "config": {},
               "seed": cfg.engine.seed, "versions": versions(), "run_config": run_config, "training": training}
    write_results(metrics, {}, out_dir)
    report.write(out_dir, title=title)
    return metrics


def objective_momentum(cfg: PretrainConfig) -> float:
    for spec in cfg.objectives:
        if isinstance(spec, dict) and "momentum" in spec:
            return float(spec["momentum"])
    return 0.995
