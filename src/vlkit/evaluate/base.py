"""The evaluator interface: a registry, a result type with side channels, shared metrics.

An evaluator is a small class with a typed ``Config`` dataclass and one method,
``evaluate(ctx) -> EvalResult``. It asks the :class:`~vlkit.evaluate.context.EvalContext` only
for what it needs (features, labels, a text encoder, metadata) and never sees a method, so
every evaluator can be tested with synthetic tensors.

:class:`EvalResult` *is* the flat ``{metric: float}`` dict (CLIP_benchmark's names where they
exist), so code that only wants numbers treats it as a dict. Two side channels ride along:

- ``artifacts``: JSON-ready non-scalars for the report (per-class accuracy, reliability
  diagram bins, coverage curves, example retrievals);
- ``chance``: the chance level of a metric where one is known (shown next to it in
  ``metrics.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import torch

from .. import config as _config
from ..errors import UserError
from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from .context import EvalContext


class EvalResult(dict):
    """Flat scalar metrics, plus ``artifacts`` and ``chance`` side channels (see module doc)."""

    def __init__(self, metrics: Mapping[str, Any] = (), artifacts=None, chance=None):
        super().__init__({k: _scalar(k, v) for k, v in dict(metrics).items()})
        self.artifacts: dict[str, Any] = dict(artifacts or {})
        self.chance: dict[str, float] = {k: _scalar(k, v) for k, v in dict(chance or {}).items()}


def _scalar(key: str, value: Any) -> float:
    """Metrics stay scalar: a tensor or array must hold exactly one number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"metric {key!r} is not a scalar (shape {tuple(value.shape)}); put it in artifacts")
        return float(value.item())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} is not a number ({type(value).__name__}); put it in artifacts") from None


@dataclass
class NoOptions:
    """An evaluator without options."""


class Evaluator:
    """Base class: ``Config`` holds the options, ``evaluate`` computes the metrics."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "Evaluator":
        """Build from a plain mapping; unknown keys and wrong types raise UserError."""
        return cls(_config.build(cls.Config, options or {}, prefix=f"{cls.name}."))

    def evaluate(self, ctx: "EvalContext") -> EvalResult:
        raise NotImplementedError

    def __call__(self, ctx: "EvalContext") -> EvalResult:
        result = self.evaluate(ctx)
        return result if isinstance(result, EvalResult) else EvalResult(result)


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")


def require_finite(values, what: str, model: str | Callable[[], str], suite: str | None) -> torch.Tensor:
    """``values`` as a tensor, unchanged, when every entry is finite; else a one-line UserError
    naming the suite and the model (``model``: its name, or a function called only for the error).

    No metric computed from NaN or infinite features means anything, and some look perfect:
    NaN compares false with everything, so in retrieval no negative ever scores "at least as
    high" as a NaN positive and every query ranks first (R@1 = MRR = 1.0). The evaluation
    sources (:mod:`vlkit.evaluate.sources`) call this on everything a model or the user hands
    to a suite (image and text features, given logits, the logit scale), so every suite refuses
    them in one place.
    """
    values = torch.as_tensor(values)
    if not (values.is_floating_point() or values.is_complex()):
        return values
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return values
    rows = bad.reshape(len(values), -1).any(dim=1) if values.dim() else bad.reshape(1)
    where, model = (f"{suite}: " if suite else ""), (model() if callable(model) else model)
    raise UserError(
        f"{where}model {model} gives NaN or infinite {what} ({int(rows.sum())} of {len(rows)} rows), "
        "so no metric can be computed; check the model's weights (a diverged or damaged checkpoint?) "
        "and its inputs"
    )


# -- classification metrics shared by zeroshot, linear_probe and calibration ----------------------


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits; NaN when k > n_classes
    (CLIP_benchmark reports acc5 as NaN below 5 classes rather than a trivially perfect 1.0)."""
    n_classes = logits.shape[1]
    if k > n_classes:
        return math.nan
    topk = logits.topk(k, dim=1).indices  # (N, k)
    return (topk == labels[:, None]).any(dim=1).float().mean().item()


def per_class_recall(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Recall of each class, (n_classes,); NaN for a class with no examples."""
    total = torch.bincount(labels, minlength=n_classes).double()
    correct = torch.bincount(labels[pred == labels], minlength=n_classes).double()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, math.nan))


def mean_per_class_recall(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Balanced accuracy: mean recall over the classes present in ``labels`` (as scikit-learn)."""
    recall = per_class_recall(pred, labels, n_classes)
    return recall[~recall.isnan()].mean().item()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """acc1, acc5 and mean_per_class_recall, CLIP_benchmark's names."""
    labels = labels.long()
    n_classes = logits.shape[1]
    return {
        "acc1": topk_accuracy(logits, labels, 1),
        "acc5": topk_accuracy(logits, labels, 5),
        "mean_per_class_recall": mean_per_class_recall(logits.argmax(1), labels, n_classes),
    }


def classification_chance(n_classes: int) -> dict[str, float]:
    """Chance levels of a uniform random guesser."""
    return {
        "acc1": 1.0 / n_classes,
        "acc5": min(5, n_classes) / n_classes if n_classes >= 5 else math.nan,
        "mean_per_class_recall": 1.0 / n_classes,
    }


def per_class_table(logits: torch.Tensor, labels: torch.Tensor, classnames: list[str] | None) -> dict[str, float]:
    """{class name: accuracy} for the classes present (an artifact for the report)."""
    n_classes = logits.shape[1]
    recall = per_class_recall(logits.argmax(1), labels.long(), n_classes)
    names = classnames if classnames is not None else [str(i) for i in range(n_classes)]
    return {names[c]: float(recall[c]) for c in range(n_classes) if not math.isnan(recall[c])}


CONFUSION_MAX_CLASSES = 20  # a confusion matrix is recorded (and drawn) only where classes are few


def confusion_table(logits: torch.Tensor, labels: torch.Tensor, classnames: list[str] | None) -> dict | None:
    """``{"classes": names, "counts": [[n(true=i, predicted=j)]]}`` (rows: true class), or None
    when there are more than :data:`CONFUSION_MAX_CLASSES` classes (unreadable as a grid)."""
    n_classes = logits.shape[1]
    if n_classes > CONFUSION_MAX_CLASSES:
        return None
    pred = logits.argmax(1).long()
    counts = torch.zeros(n_classes, n_classes, dtype=torch.long)
    counts.index_put_((labels.long(), pred), torch.ones_like(pred), accumulate=True)  # (C, C)
    names = classnames if classnames is not None else [str(i) for i in range(n_classes)]
    return {"classes": list(names), "counts": counts.tolist()}


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into two disjoint parts (first has ``fraction``)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_first = int(round(n * fraction))
    first, second = perm[:n_first].sort().values, perm[n_first:].sort().values
    if len(set(first.tolist()) & set(second.tolist())):  # a real check, not an assert -O removes
        raise RuntimeError("internal error: split parts overlap")
    return first, second


def kshot_indices(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Up to ``shots`` random positions per class, seeded, sorted."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:shots]])
    return torch.cat(picks).sort().values
