"""Calibration of zero-shot probabilities: ECE, NLL, Brier, before and after temperature scaling.

"On Calibration of Modern Neural Networks" (Guo et al., arXiv 1706.04599): expected
calibration error over 15 equal-width bins of the top-class probability, and temperature
scaling, a single T > 0 fitted by minimising NLL on a validation split and applied to the
test logits. Brier is the multi-class score, mean over samples of sum_c (p_c - y_c)^2.

Names: ``ece``, ``nll``, ``brier`` (before), ``ece_ts``, ``nll_ts``, ``brier_ts`` (after),
``temperature`` (the fitted T), ``acc1`` (unchanged by T). Reliability-diagram bins, before
and after, go to the ``reliability`` artifact.

Logits are the model's own: ``logit_scale * cos(image, class)`` (what its softmax would
give), or the logits an array context supplies. Deviation: with no validation split, a seeded
half of the test split fits T and the other half is scored (the ``protocol`` artifact says
which).

Bins: bin b of B is (b / B, (b + 1) / B], as in Guo et al.'s reference code (gpleiss/
temperature_scaling: ``conf > lo and conf <= hi``); a confidence of exactly 1.0 is in the last
bin and one on an edge is in the bin that edge closes (0.4 of 5 bins is in (0.2, 0.4]). Edges
are k / B as floats, so a confidence written as that fraction compares equal to its edge.
Deviation: a confidence of 0 (never a softmax output) is put in the first bin instead of
dropped. torchmetrics uses [lo, hi) instead, so its ECE can differ when confidences sit on
edges. CLIP_benchmark has no calibration metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import EVALUATORS, EvalResult, Evaluator, split_indices, topk_accuracy
from .zeroshot import class_logits

N_BINS = 15


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> list[dict]:
    """Per equal-width confidence bin (lo, hi]: count, mean confidence, accuracy."""
    check_n_bins(n_bins)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins  # k / B, rounded once (linspace is not)
    # bin b holds conf in (edges[b], edges[b+1]]; conf 0 joins the first bin
    which = torch.bucketize(conf.double(), edges, right=False).clamp(1, n_bins) - 1
    bins = []
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        bins.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": n,
                "confidence": float(conf[mask].double().mean()) if n else None,
                "accuracy": float(correct[mask].mean()) if n else None,
            }
        )
    return bins


def check_n_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise UserError(f"calibration.n_bins={n_bins!r} must be a positive integer; use e.g. calibration.n_bins=15")


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """sum over bins of |bin| / n * |accuracy(bin) - confidence(bin)|."""
    n = len(labels)
    bins = [b for b in reliability_bins(probs, labels, n_bins) if b["count"]]
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins)


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    onehot = F.one_hot(labels.long(), probs.shape[1]).to(probs.dtype)
    return (probs - onehot).pow(2).sum(dim=1).mean().item()


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    probs = logits.double().softmax(dim=1)
    return {
        "ece": expected_calibration_error(probs, labels, n_bins),
        "nll": F.cross_entropy(logits.double(), labels.long()).item(),
        "brier": brier_score(probs, labels),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """T > 0 minimising NLL(logits / T). NLL is convex in 1/T, so L-BFGS on log(1/T) is safe."""
    x, y = logits.double().detach(), labels.long()
    log_inv_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_inv_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x * log_inv_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float((-log_inv_t.detach()).exp())


@dataclass
class CalibrationConfig:
    split: str = "test"  # scored
    fit_split: str = "val"  # fits the temperature; half of `split` when the dataset has none
    n_bins: int = N_BINS


@EVALUATORS.register("calibration")
class Calibration(Evaluator):
    """ECE / NLL / Brier of the model's class probabilities, before and after temperature scaling."""

    name = "calibration"
    Config = CalibrationConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg = self.config
        check_n_bins(cfg.n_bins)
        logits, labels = class_logits(ctx, cfg.split), ctx.labels(cfg.split)
        if ctx.has_split(cfg.fit_split):
            fit_logits, fit_labels = class_logits(ctx, cfg.fit_split), ctx.labels(cfg.fit_split)
            protocol = f"temperature fitted on {cfg.fit_split!r}, scored on {cfg.split!r}"
        else:
            fit_idx, test_idx = split_indices(len(labels), 0.5, ctx.seed)
            fit_logits, fit_labels = logits[fit_idx], labels[fit_idx]
            logits, labels = logits[test_idx], labels[test_idx]
            protocol = (f"no {cfg.fit_split!r} split: temperature fitted on a seeded half of {cfg.split!r}, "
                        "scored on the other half")
        temperature = fit_temperature(fit_logits, fit_labels)
        before = calibration_metrics(logits, labels, cfg.n_bins)
        after = calibration_metrics(logits / temperature, labels, cfg.n_bins)
        metrics = {"acc1": topk_accuracy(logits, labels, 1), **before}
        metrics.update({f"{k}_ts": v for k, v in after.items()}, temperature=temperature)
        return EvalResult(
            metrics,
            artifacts={
                "reliability": {
                    "before": reliability_bins(logits.double().softmax(1), labels, cfg.n_bins),
                    "after": reliability_bins((logits.double() / temperature).softmax(1), labels, cfg.n_bins),
                },
                "protocol": protocol,
                "logit_scale": ctx.logit_scale,
            },
            chance={"acc1": 1.0 / logits.shape[1]},
        )
