"""Linear probe: multinomial logistic regression on frozen, cached image features.

Protocol of LAION-AI/CLIP_benchmark (``clip_benchmark/metrics/linear_probe.py``), itself after
CLIP's (arXiv 2103.00020, appendix A.3): features computed once, optionally K shots per class
for training, and the weight decay searched on the validation split as CLIP_benchmark does:
the grid is ``logspace(-6, 2, 97)``; the coarse pass scores its 7 points of
``logspace(-6, 2, 7)`` (indices 0, 16, ..., 96); then, with span 8, 4, 2, 1, the peak and its
neighbours at peak - span and peak + span (clamped to the grid) are scored and the best becomes
the peak. Each pass keeps the first candidate, in the order tried, whose validation top-1
accuracy is strictly above the best so far, starting from (index 0, accuracy 0) (so ties go to
the smaller weight decay and a pass where every accuracy is 0 returns index 0). The chosen
value is refit on train + val (on the K-shot training samples only, when K is set) and the
test split is touched once, at the end. Reports ``acc1``, ``acc5`` (NaN under 5 classes) and
``mean_per_class_recall``.

Deviations:
- the optimiser is full-batch L-BFGS on a convex objective (cross-entropy + wd/2 |W|^2, bias
  unpenalised, features centred) instead of AdamW + cosine for ``epochs`` (CLIP_benchmark's
  default 10) with AdamW's decoupled decay: deterministic, no learning rate to tune, fast on a
  CPU; fits are capped at ``max_iter`` iterations (100). The same weight decay value therefore
  regularises differently than in CLIP_benchmark; the grid and the search are the same.
- with no validation split CLIP_benchmark skips the search and trains with weight decay 0;
  vlkit holds out a seeded ``val_fraction`` of the training split for the search and refits on
  the whole training split (its K shots, when K is set). The same holds when ``val_split`` is
  the scored ``test_split`` (e.g. ``vlkit eval --split val``), so the scored split is never
  searched on or trained on.
- ``acc5`` is NaN when there are fewer than 5 classes (the zero-shot rule); CLIP_benchmark's
  probe makes it NaN when the largest test label is below 5.
- the grid is torch's ``logspace`` (within 3e-15 relative of numpy's).

K-shot samples are drawn per class from the (remaining) training samples with the context's
seed (``vlkit.data.fewshot_indices`` where the data are datasets, so the probe sees the same K
shots as the adaptation methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


COARSE_STRIDE = 16  # logspace(-6, 2, 7) sits at every 16th point of logspace(-6, 2, 97)
SPANS = (8, 4, 2, 1)


def find_peak(candidates, val_acc: Callable[[int], float]) -> int:
    """CLIP_benchmark's ``find_peak``: the first candidate whose accuracy beats the best so far,
    starting from (index 0, accuracy 0)."""
    best, best_acc = 0, 0.0
    for i in candidates:
        acc = val_acc(i)
        if acc > best_acc:
            best, best_acc = i, acc
    return best


def search_grid(val_acc: Callable[[int], float], n: int = len(WD_GRID)) -> int:
    """Index of the chosen grid value: coarse pass, then span 8, 4, 2, 1 around the peak."""
    peak = find_peak(range(0, n, COARSE_STRIDE), val_acc)
    for span in SPANS:
        peak = find_peak([max(peak - span, 0), peak, min(peak + span, n - 1)], val_acc)
    return peak


def search_weight_decay(train, val, n_classes: int, max_iter: int = 100) -> tuple[int, list[dict]]:
    """Index into WD_GRID chosen by :func:`search_grid` on validation top-1 accuracy, and the
    log of every value tried (each fitted once). Only ``val`` is scored."""
    tried: dict[int, tuple[float, float]] = {}

    def val_acc(i: int) -> float:
        if i not in tried:
            params = fit_logistic_regression(*train, n_classes, WD_GRID[i], max_iter)
            logits = predict(val[0], params)
            acc = (logits.argmax(1) == val[1]).double().mean().item()
            tried[i] = (acc, F.cross_entropy(logits, val[1]).item())
        return tried[i][0]

    best = search_grid(val_acc)
    log = [{"weight_decay": WD_GRID[i], "val_acc1": a, "val_nll": nll} for i, (a, nll) in sorted(tried.items())]
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
        # a val split that is also the scored split is neither searched on nor trained on
        has_val = ctx.has_split(cfg.val_split) and cfg.val_split != cfg.test_split
        if has_val:
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
        final_x, final_y = self._final_training_set(ctx, train_x, train_y, val, has_val)
        params = fit_logistic_regression(final_x, final_y, n_classes, WD_GRID[best], cfg.max_iter)
        logits = predict(test_x, params).float()
        return EvalResult(
            classification_metrics(logits, test_y),
            artifacts={
                "weight_decay": WD_GRID[best],
                "search": log,
                "validation": val_source,
                "n_train": len(final_y),
                "per_class_acc1": per_class_table(logits, test_y, names),
            },
            chance=classification_chance(n_classes),
        )

    def _final_training_set(self, ctx, train_x, train_y, val, has_val: bool):
        """train + val with all shots (as CLIP_benchmark); the K-shot training samples alone
        when K is set; the whole training split when val was held out of it."""
        cfg = self.config
        if cfg.shots:
            idx = ctx.fewshot(cfg.train_split, cfg.shots)
            return train_x[idx], train_y[idx]
        if has_val:
            return torch.cat([train_x, val[0]]), torch.cat([train_y, val[1]])
        return train_x, train_y

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
