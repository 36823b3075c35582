"""Linear probe: L2-regularised logistic regression on frozen image features, C searched on validation.

The few-shot baseline of CLIP ("Learning Transferable Visual Models From Natural Language
Supervision", arXiv 2103.00020, sec. 3.2 / appendix A.3) as the CoOp paper runs it ("Learning to
Prompt for Vision-Language Models", arXiv 2109.01134; KaiyangZhou/CoOp ``lpclip/``):

- features: the image tower's projected output for the eval transform (no augmentation, no
  L2 normalisation), computed once (the shared feature cache);
- classifier: scikit-learn ``LogisticRegression(solver="lbfgs", penalty="l2", C, max_iter=1000)``
  (multinomial) on the K-shot training features;
- C (the inverse L2 strength) searched on the validation few-shot set (min(K, 4) shots): a
  coarse pass over 1e6, 1e4, ..., 1e-6, then 8 steps of a bisection in log10(C) started at
  [peak / 10, peak * 10]: each step fits both ends, keeps the better one (the left, smaller C,
  on a tie) and halves the interval towards it; the classifier reported is the last step's.

Deviations: none in the mechanism. Without a validation split, C is the config's ``C``
(scikit-learn's default 1.0) and nothing is searched; the run's notes say so. Logits are the
decision function (for two classes, ``[0, w.x + b]``, which gives the same argmax and softmax).
It learns per-class weights, so it cannot classify new classes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..base import Method, help_field, register_method

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # lpclip's search initialisation


@dataclass
class LinearProbeConfig:
    """Reference (CoOp lpclip): L-BFGS logistic regression, max_iter 1000, C searched on validation."""

    C: float = help_field(1.0, "inverse L2 strength when nothing is searched (no validation split, or search=false)")
    search: bool = help_field(True, "search C on validation: coarse 1e6..1e-6, then log10 bisection")
    search_steps: int = help_field(8, "bisection steps after the coarse pass (lpclip: 8)")
    max_iter: int = help_field(1000, "L-BFGS iterations per fit")


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    """A fitted scikit-learn multinomial logistic regression (L-BFGS, L2 penalty, inverse strength c)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lpclip lets max_iter end a fit, as here
        return LogisticRegression(solver="lbfgs", C=float(c), max_iter=int(max_iter)).fit(x, y)  # L2 penalty: the default


def bisect_c(fit_and_score, peak: float, steps: int) -> tuple[float, list[tuple[float, float]]]:
    """lpclip's refinement around ``peak``: (the chosen C, [(C, validation accuracy) tried]).

    ``fit_and_score(c) -> accuracy``. The interval [peak / 10, peak * 10] shrinks in log10: when
    the right end scores strictly higher it is kept and the interval becomes [mid, right],
    otherwise the left is kept and it becomes [left, mid].
    """
    lo, hi = math.log10(peak) - 1, math.log10(peak) + 1
    chosen, tried = peak, []
    for _ in range(int(steps)):
        acc_lo, acc_hi = fit_and_score(10 ** lo), fit_and_score(10 ** hi)
        tried += [(10 ** lo, acc_lo), (10 ** hi, acc_hi)]
        mid = 0.5 * (lo + hi)
        if acc_lo < acc_hi:
            chosen, lo = 10 ** hi, mid
        else:
            chosen, hi = 10 ** lo, mid
    return chosen, tried


@register_method("linear_probe")
class LinearProbe(Method):
    Config = LinearProbeConfig
    trainable = False
    class_agnostic = False
    train_features = "eval"

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        d, dev = model.embed_dim, model.device
        self.register_buffer("weight", torch.zeros(self.n_classes, d, device=dev))  # (n_cls, D)
        self.register_buffer("bias", torch.zeros(self.n_classes, device=dev))
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def prepare(self, train_views: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit with the configured C on the training features ((1, N, D): eval transform)."""
        x = train_views.reshape(-1, train_views.shape[-1]).double().cpu().numpy()  # (N, D)
        y = labels.repeat(train_views.shape[0]).cpu().numpy()
        self._train = (x, y)
        self._set(self._fit(self.config.C))

    def _fit(self, c: float):
        x, y = self._train
        if len(np.unique(y)) < 2:  # scikit-learn needs two classes; one class: it always wins
            return None
        return fit_logistic_regression(x, y, c, self.config.max_iter)

    @torch.no_grad()
    def _set(self, clf) -> None:
        """Copy a fitted classifier into the buffers, in the task's class order."""
        self.weight.zero_()
        self.bias.zero_()
        if clf is None:
            self.bias[int(self._train[1][0])] = 1.0
            return
        coef = torch.as_tensor(clf.coef_, dtype=self.weight.dtype)
        icpt = torch.as_tensor(clf.intercept_, dtype=self.bias.dtype)
        rows = torch.as_tensor(clf.classes_, dtype=torch.long)
        if len(rows) == 2:  # binary: scikit-learn keeps one row, the second class's margin
            coef, icpt, rows = coef[:1], icpt[:1], rows[1:]
        self.weight[rows] = coef.to(self.weight.device)
        self.bias[rows] = icpt.to(self.bias.device)
        missing = sorted(set(range(self.n_classes)) - set(clf.classes_.tolist()))
        self.bias[missing] = -math.inf  # classes without training samples are never predicted

    @torch.no_grad()
    def tune(self, val_features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """lpclip's search of C on validation features (never test); refits with the chosen C."""
        if not self.config.search or self._train is None or len(labels) == 0:
            return {}
        xv, yv = val_features.double().cpu().numpy(), labels.cpu().numpy()
        fits: dict[float, object] = {}

        def fit_and_score(c: float) -> float:
            fits[c] = self._fit(c)
            if fits[c] is None:
                return 0.0
            return float((fits[c].predict(xv) == yv).mean())

        coarse = [fit_and_score(c) for c in COARSE_C]
        peak = COARSE_C[int(np.argmax(coarse))]  # the first best, as numpy's argmax
        chosen, tried = bisect_c(fit_and_score, peak, self.config.search_steps)
        self._set(fits[chosen])
        best = dict(tried + list(zip(COARSE_C, coarse)))[chosen]
        return {"C": chosen, "val_acc": best, "n_fits": len(coarse) + len(tried)}

    def describe_selection(self, selection: str | None) -> str:
        return "C searched on validation" if self.config.search else f"C = {self.config.C:g}"

    def logits(self, batch: dict) -> torch.Tensor:
        f = self.image_embeds(batch).to(self.weight.dtype)  # (B, D), unnormalised, as lpclip
        return f @ self.weight.T + self.bias  # (B, n_cls)
