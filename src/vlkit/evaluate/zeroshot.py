"""Zero-shot classification, as CLIP_benchmark computes it.

"Learning Transferable Visual Models From Natural Language Supervision" (CLIP, arXiv
2103.00020), prompt ensembling; metric semantics from LAION-AI/CLIP_benchmark: for each class,
fill every template with the class name, encode, L2-normalise each prompt embedding, average
over templates and renormalise; logits = 100 * image @ W. Reports ``acc1``, ``acc5`` (NaN
under 5 classes) and ``mean_per_class_recall`` (balanced accuracy: mean recall over the classes
present in the labels; CLIP_benchmark calls scikit-learn's balanced_accuracy_score, which
drops a class that is predicted but never a label).
Per-class accuracy goes to the ``per_class_acc1`` artifact.

:func:`class_logits` is shared with the calibration and conformal suites: it returns the
logits a source gave (array contexts) or zero-shot logits at a chosen scale, with the
classifier built once per context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import (
    EVALUATORS,
    EvalResult,
    Evaluator,
    classification_chance,
    classification_metrics,
    confusion_table,
    per_class_table,
)

CLIP_BENCHMARK_SCALE = 100.0


def fill_template(template: str, classname: str) -> str:
    if "{}" not in template:
        raise UserError(
            f"prompt template {template!r} has no '{{}}' for the class name; write e.g. 'a photo of a {{}}.'"
        )
    return template.replace("{}", classname)


def zeroshot_classifier(
    encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(D, n_classes) weights: per class the renormalised mean of its normalised prompt embeddings."""
    prompts = [fill_template(t, c) for c in classnames for t in templates]  # class-major
    emb = F.normalize(encode_text(prompts).float(), dim=-1)  # (C * T, D)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, D)
    return F.normalize(emb, dim=-1).T  # (D, C)


def context_classifier(ctx, split: str) -> torch.Tensor:
    """The zero-shot classifier of a split's class names and templates, built once."""
    names, templates = ctx.classnames(split), ctx.templates(split)
    key = ("zeroshot_classifier", tuple(names), tuple(templates))
    return ctx.memo(key, lambda: zeroshot_classifier(ctx.encode_text, names, templates))


def class_logits(ctx, split: str, scale: float | None = None) -> torch.Tensor:
    """(N, n_classes) logits of a split: given by the source, else zero-shot at ``scale``
    (default: the model's own ``logit_scale``, which is what its softmax would use)."""
    given = ctx.logits(split)
    if given is not None:
        return given
    scale = ctx.logit_scale if scale is None else scale
    return scale * ctx.image_features(split) @ context_classifier(ctx, split)  # (N, C)


@dataclass
class ZeroShotConfig:
    split: str = "test"  # the split to classify


@EVALUATORS.register("zeroshot")
class ZeroShot(Evaluator):
    """Zero-shot accuracy from class names x prompt templates."""

    name = "zeroshot"
    Config = ZeroShotConfig

    def evaluate(self, ctx) -> EvalResult:
        split = self.config.split
        given = ctx.logits(split) is not None
        # a view without class names fails here, before anything is encoded
        names = ctx.classnames(split) if not (given and not ctx.has_classnames(split)) else None
        logits = class_logits(ctx, split, scale=CLIP_BENCHMARK_SCALE)
        labels = ctx.labels(split)
        if len(labels) != len(logits):
            raise RuntimeError(f"{len(logits)} logits for {len(labels)} labels in split {split!r}")
        artifacts = {
            "per_class_acc1": per_class_table(logits, labels, names),
            "n_classes": logits.shape[1],
            "n_templates": 0 if given else len(ctx.templates(split)),
            "n_samples": len(labels),
        }
        confusion = confusion_table(logits, labels, names)
        if confusion is not None:  # few classes: the grid says which ones are mistaken for which
            artifacts["confusion"] = confusion
        return EvalResult(
            classification_metrics(logits, labels),
            artifacts=artifacts,
            chance=classification_chance(logits.shape[1]),
        )
