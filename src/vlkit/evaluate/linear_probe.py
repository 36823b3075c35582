"""Linear probe: multinomial logistic regression on frozen, cached image features.

Protocol of LAION-AI/CLIP_benchmark (``linear_probe``), itself after CLIP's (arXiv 2103.00020,
sec. 3.2): features computed once, optionally K shots per class, the weight decay searched
over ``logspace(-6, 2, 97)`` with a coarse pass then a bisection-style refinement, scored on a
validation split *only*; the chosen value is refit on the training split and the test split is
touched once, at the end. Reports ``acc1``, ``acc5`` (NaN under 5 classes) and
``mean_per_class_recall``.

Deviations: the optimiser is full-batch L-BFGS on a convex objective (cross-entropy + wd/2
|W|^2, bias unpenalised, features centred) instead of AdamW + cosine for 10 epochs:
deterministic, no learning rate to tune, and fast on a CPU; fits are capped at ``max_iter``
iterations (100), an early stop much like CLIP_benchmark's 10 epochs. When the dataset has no validation split, a seeded
``val_fraction`` of the training split is held out for the search, and the final fit uses the
whole training split. K-shot samples are drawn per class from the (remaining) training
samples with the context's seed (``vlkit.data.fewshot_indices`` where the data are datasets, so
the probe sees the same K shots as the adaptation methods).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import (
    EVALUATORS,
    EvalResult,
    Evaluator,
    classification_chance,
    classification_metrics,
    per_class_table,
    split_indices,
)

WD_GRID = torch.logspace(-6, 2, 97, dtype=torch.float64).tolist()


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, weight_decay: float, max_iter: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (D, C), b (C,)) minimising mean CE + weight_decay / 2 * |W|^2 by full-batch L-BFGS.

    The features are centred first: with an unpenalised bias this is the same model and the
    same penalty (b absorbs -mean @ W, folded back below), but far better conditioned, since
    CLIP-style features share a large common direction. Fits stop after ``max_iter``
    iterations, which also bounds the weights at the smallest weight decays.
    """
    x, y = features.float(), labels.long()
    mean = x.mean(dim=0)  # (D,)
    x = x - mean
    weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return weight, bias - mean @ weight


def predict(features: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    weight, bias = params
    return features.float() @ weight + bias  # (N, C)


def search_weight_decay(train, val, n_classes: int, max_iter: int = 100) -> tuple[int, list[dict]]:
    """Index into WD_GRID with the best validation accuracy (ties: lower validation NLL).

    Coarse pass over every 8th grid value, then steps of 4, 2, 1 around the best so far, as
    CLIP_benchmark does. Only ``val`` is scored.
    """
    tried: dict[int, tuple[float, float]] = {}

    def score(i: int) -> tuple[float, float]:
        if i not in tried:
            params = fit_logistic_regression(*train, n_classes, WD_GRID[i], max_iter)
            logits = predict(val[0], params)
            acc = (logits.argmax(1) == val[1]).double().mean().item()
            tried[i] = (acc, -F.cross_entropy(logits, val[1]).item())
        return tried[i]

    best = max(range(0, len(WD_GRID), 8), key=score)
    for step in (4, 2, 1):
        neighbours = [i for i in (best - step, best, best + step) if 0 <= i < len(WD_GRID)]
        best = max(neighbours, key=score)
    log = [{"weight_decay": WD_GRID[i], "val_acc1": a, "val_nll": -n} for i, (a, n) in sorted(tried.items())]
    return best, log


@dataclass
class LinearProbeConfig:
    train_split: str = "train"
    val_split: str = "val"  # searched on; held out of train_split when the dataset has none
    test_split: str = "test"
    val_fraction: float = 0.2  # share of train_split held out when there is no val_split
    shots: int = 0  # K samples per class for training (0: all)
    max_iter: int = 100  # L-BFGS iterations per fit (an early stop at the smallest weight decays)


@EVALUATORS.register("linear_probe")
class LinearProbe(Evaluator):
    """Logistic regression on frozen image features; weight decay chosen on validation only."""

    name = "linear_probe"
    Config = LinearProbeConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg = self.config
        if not 0 < cfg.val_fraction < 1 or cfg.shots < 0:
            raise UserError("linear_probe: val_fraction must be in (0, 1) and shots >= 0; e.g. val_fraction=0.2")
        train_x, train_y = ctx.image_features(cfg.train_split), ctx.labels(cfg.train_split)
        if ctx.has_split(cfg.val_split):
            val = (ctx.image_features(cfg.val_split), ctx.labels(cfg.val_split))
            fit_idx, val_source = torch.arange(len(train_y)), cfg.val_split
        else:
            val_idx, fit_idx = split_indices(len(train_y), cfg.val_fraction, ctx.seed)
            val, val_source = (train_x[val_idx], train_y[val_idx]), f"{cfg.val_fraction:g} of {cfg.train_split}"
        if cfg.shots:
            fit_idx = ctx.fewshot(cfg.train_split, cfg.shots, within=fit_idx)
        test_x, test_y = ctx.image_features(cfg.test_split), ctx.labels(cfg.test_split)
        names = self._same_classes(ctx)
        n_classes = max(int(max(train_y.max(), test_y.max(), val[1].max())) + 1, len(names or ()))

        best, log = search_weight_decay((train_x[fit_idx], train_y[fit_idx]), val, n_classes, cfg.max_iter)
        # refit on the whole training split (the held-out part too), K-shot when asked
        final_idx = ctx.fewshot(cfg.train_split, cfg.shots) if cfg.shots else torch.arange(len(train_y))
        params = fit_logistic_regression(train_x[final_idx], train_y[final_idx], n_classes, WD_GRID[best], cfg.max_iter)
        logits = predict(test_x, params).float()
        return EvalResult(
            classification_metrics(logits, test_y),
            artifacts={
                "weight_decay": WD_GRID[best],
                "search": log,
                "validation": val_source,
                "n_train": len(final_idx),
                "per_class_acc1": per_class_table(logits, test_y, names),
            },
            chance=classification_chance(n_classes),
        )

    def _same_classes(self, ctx) -> list[str] | None:
        """The class names, checked equal across splits: a probe trained on one label set
        cannot be scored on another (e.g. OpenMoji's split-local ``concept`` view)."""
        cfg = self.config
        splits = [s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if ctx.has_split(s)]
        names = {s: ctx.classnames(s) if ctx.has_classnames(s) else None for s in splits}
        if len({tuple(n) if n else None for n in names.values()}) > 1:
            raise UserError(
                f"linear_probe: view {ctx.view!r} of {ctx.data_name} has different classes in "
                f"{' and '.join(splits)}; use a view whose classes are shared, e.g. openmoji:subgroup"
            )
        return names[cfg.test_split]
