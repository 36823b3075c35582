"""Split conformal prediction sets over the model's class probabilities: LAC, APS, RAPS.

- LAC, "Least Ambiguous Set-Valued Classifiers with Bounded Error Levels" (Sadinle et al.,
  arXiv 1609.00451): s(x, y) = 1 - p_y.
- APS, "Classification with Valid and Adaptive Coverage" (Romano et al., arXiv 2006.02544):
  s(x, y) = probability mass of the classes ranked up to and including y; randomised: minus
  U * p_y, with one U ~ Uniform(0, 1) per example.
- RAPS, "Uncertainty Sets for Image Classifiers using Conformal Prediction" (Angelopoulos et
  al., arXiv 2009.14193): APS + lambda * max(rank(y) - k_reg, 0), rank 1-based.

Split conformal: a seeded random half of the split calibrates (the two halves are checked
disjoint), q_hat is the k-th smallest calibration score with k = ceil((n + 1)(1 - alpha)) (as
in MAPIE and Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction", arXiv
2107.07511; infinite when k > n, so every class is in the set), and the set of a test example
is every class with s(x, y) <= q_hat. Marginal coverage >= 1 - alpha then holds by
exchangeability. Metrics per score: ``{score}_coverage``, ``{score}_set_size`` (mean),
``{score}_class_coverage_min`` / ``_mean`` (over classes present in the test half),
``{score}_qhat``. Coverage and mean set size across alpha go to the ``curves`` artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..registry import Registry
from .base import EVALUATORS, EvalResult, Evaluator, split_indices
from .zeroshot import class_logits

CURVE_ALPHAS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]


class ConformalScore:
    """A non-conformity score s(x, y) for every class: ``scores(probs, u) -> (n, C)``."""

    name = ""

    def scores(self, probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


CONFORMAL_SCORES: Registry[type[ConformalScore]] = Registry("conformal score")


@CONFORMAL_SCORES.register("lac")
class LAC(ConformalScore):
    def __init__(self, **_):
        pass

    def scores(self, probs, u):
        return 1.0 - probs


@CONFORMAL_SCORES.register("aps")
class APS(ConformalScore):
    def __init__(self, randomized: bool = True, **_):
        self.randomized = randomized

    def sorted_scores(self, sorted_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Scores in rank order: (n, C), column j = the class ranked j + 1."""
        cum = sorted_probs.cumsum(dim=1)  # mass up to and including each rank
        return cum - u[:, None] * sorted_probs if self.randomized else cum

    def scores(self, probs, u):
        sorted_probs, order = probs.sort(dim=1, descending=True)  # (n, C) each
        in_rank_order = self.sorted_scores(sorted_probs, u)
        return torch.empty_like(probs).scatter_(1, order, in_rank_order)  # back to class order


@CONFORMAL_SCORES.register("raps")
class RAPS(APS):
    def __init__(self, randomized: bool = True, lam: float = 0.01, k_reg: int = 1, **_):
        super().__init__(randomized)
        self.lam, self.k_reg = lam, k_reg

    def sorted_scores(self, sorted_probs, u):
        rank = torch.arange(1, sorted_probs.shape[1] + 1, dtype=sorted_probs.dtype)  # (C,)
        penalty = self.lam * (rank - self.k_reg).clamp(min=0)
        return super().sorted_scores(sorted_probs, u) + penalty[None, :]


def conformal_quantile(cal_scores: torch.Tensor, alpha: float) -> float:
    """The k-th smallest calibration score, k = ceil((n + 1)(1 - alpha)); inf when k > n.

    This is numpy's ``quantile(k / n, method="inverted_cdf")``; torch.quantile(k / n, "higher")
    lands one rank higher (its positions run over 0..n-1), which over-covers.
    """
    check_alpha(alpha)
    n = len(cal_scores)
    # the 1e-9 absorbs float error: 10 * (1 - 0.3) is 7.000000000000001, whose ceil is 8, not 7
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if k > n:
        return math.inf  # too few calibration points for this alpha: every class is in the set
    return cal_scores.double().sort().values[k - 1].item()


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise UserError(f"conformal: alpha={alpha} is outside (0, 1); use the miscoverage rate, e.g. alpha=0.1")


def prediction_sets(cal_scores_all, cal_labels, test_scores_all, alpha):
    """(sets (n_test, C) bool, q_hat) from per-class scores of calibration and test examples."""
    cal = cal_scores_all.gather(1, cal_labels[:, None]).squeeze(1)  # (n_cal,) score of the true class
    q_hat = conformal_quantile(cal, alpha)
    return test_scores_all <= q_hat, q_hat


def set_metrics(sets: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Coverage, mean set size, and coverage per class (min and mean over classes present)."""
    covered = sets.gather(1, labels[:, None]).squeeze(1).double()  # (n,)
    per_class = [covered[labels == c].mean().item() for c in labels.unique().tolist()]
    return {
        "coverage": covered.mean().item(),
        "set_size": sets.sum(dim=1).double().mean().item(),
        "class_coverage_min": min(per_class),
        "class_coverage_mean": sum(per_class) / len(per_class),
    }


def split_conformal(probs, labels, score: ConformalScore, alpha: float, seed: int, cal_fraction: float = 0.5):
    """Calibrate on a seeded random part, evaluate on the disjoint rest: metrics and q_hat."""
    cal_idx, test_idx = split_indices(len(labels), cal_fraction, seed)
    u = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed + 1), dtype=probs.dtype)
    all_scores = score.scores(probs, u)  # (n, C)
    sets, q_hat = prediction_sets(all_scores[cal_idx], labels[cal_idx], all_scores[test_idx], alpha)
    return {**set_metrics(sets, labels[test_idx]), "qhat": q_hat}


@dataclass
class ConformalConfig:
    split: str = "test"  # split into calibration and test parts
    alpha: float = 0.1  # target miscoverage: sets contain the label with probability >= 1 - alpha
    scores: list[str] = field(default_factory=lambda: ["lac", "aps", "raps"])
    randomized: bool = True  # APS/RAPS: subtract U * p_y (exact coverage, sets may be empty)
    lam: float = 0.01  # RAPS lambda
    k_reg: int = 1  # RAPS k_reg
    cal_fraction: float = 0.5


@EVALUATORS.register("conformal")
class Conformal(Evaluator):
    """Coverage and set size of split-conformal prediction sets at a chosen alpha."""

    name = "conformal"
    Config = ConformalConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg = self.config
        check_alpha(cfg.alpha)
        if not 0 < cfg.cal_fraction < 1:
            raise UserError("conformal: cal_fraction must be in (0, 1); e.g. cal_fraction=0.5")
        probs = class_logits(ctx, cfg.split).double().softmax(dim=1)  # (n, C)
        labels = ctx.labels(cfg.split)
        if len(labels) < 4:
            raise UserError(f"conformal: split {cfg.split!r} has {len(labels)} samples; use a split with at least 4")
        metrics, curves = {}, {}
        for name in cfg.scores:
            score = CONFORMAL_SCORES.get(name)(randomized=cfg.randomized, lam=cfg.lam, k_reg=cfg.k_reg)
            result = split_conformal(probs, labels, score, cfg.alpha, ctx.seed, cfg.cal_fraction)
            metrics.update({f"{name}_{k}": v for k, v in result.items()})
            curve = [split_conformal(probs, labels, score, a, ctx.seed, cfg.cal_fraction) for a in CURVE_ALPHAS]
            curves[name] = {
                "alpha": CURVE_ALPHAS,
                "coverage": [c["coverage"] for c in curve],
                "set_size": [c["set_size"] for c in curve],
            }
        return EvalResult(
            metrics,
            artifacts={"curves": curves, "alpha": cfg.alpha, "target_coverage": 1 - cfg.alpha},
        )
