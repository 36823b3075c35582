"""Cross-modal attribute insertion: how retrieval reacts to true and to false attributes.

Simplified from XMAI, "Cross-Modal Attribute Insertions for Assessing the Robustness of
Vision-and-Language Learning" (Ramshetty et al., ACL 2023, arXiv 2306.11065). XMAI inserts
attributes of objects it detects in the image in front of the caption's nouns (a masked
language model proposes candidates, ranked by LM probability, similarity to the detected
attributes and *dissimilarity* to the image) and reports the drop in text-to-image MRR.

Deviations (simplified, no detector and no language model): on shapes scenes the object
attributes are known from the metadata, so for each scene we write

- ``base``: the caption without attributes ("a circle left of a square");
- ``true_attr``: the same caption with the true size and color inserted ("a small red circle
  left of a large blue square"): a faithful model should retrieve *better*;
- ``false_attr``: plausible but false ones (another color seen in the split, the other size):
  a model that reads attributes should retrieve *worse*; one that ignores them barely moves.

Each set of captions queries the split's images (its own image is the one positive). Metrics:
``{variant}_mrr``, ``{variant}_recall@1``, and ``{variant}_delta_mrr`` / ``_delta_recall@1``
relative to ``base``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import EVALUATORS, EvalResult, Evaluator
from .retrieval import rank_metrics, retrieval_ranks
from .scenes import require_scenes, scene_caption, vocabulary


def false_objects(objects: list[dict], colors: list[str], sizes: list[str], rng: random.Random) -> list[dict]:
    """The objects with every color and size replaced by another value from the vocabulary."""
    out = []
    for o in objects:
        o = dict(o)
        for attr, values in (("color", colors), ("size", sizes)):
            others = [v for v in values if v != o.get(attr)]
            if o.get(attr) is not None and others:
                o[attr] = rng.choice(others)
        out.append(o)
    return out


def inserted_captions(metas: list[dict], seed: int) -> dict[str, list[str]]:
    """The three caption variants per scene, in sample order."""
    colors, sizes = vocabulary(metas, "color"), vocabulary(metas, "size")
    rng = random.Random(seed)
    attrs = ("size", "color")
    return {
        "base": [scene_caption(m, attributes=()) for m in metas],
        "true_attr": [scene_caption(m, attrs) for m in metas],
        "false_attr": [scene_caption(m, attrs, false_objects(m["objects"], colors, sizes, rng)) for m in metas],
    }


@dataclass
class RobustnessConfig:
    split: str = "test"
    chunk_size: int = 1024


@EVALUATORS.register("robustness")
class Robustness(Evaluator):
    """Text-to-image MRR and R@1 with true / false attributes inserted into captions."""

    name = "robustness"
    Config = RobustnessConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg = self.config
        metas = ctx.meta(cfg.split)
        require_scenes(metas, "robustness")
        if len(metas) < 2:
            raise UserError(f"robustness: split {cfg.split!r} has {len(metas)} scene; retrieval needs at least 2")
        images = ctx.image_features(cfg.split)  # (N, D)
        owner = torch.arange(len(metas))
        variants = inserted_captions(metas, ctx.seed)
        metrics = {}
        for variant, captions in variants.items():
            text_ranks, _ = retrieval_ranks(images, ctx.encode_text(captions), owner, cfg.chunk_size)
            m = rank_metrics(text_ranks, variant, ks=(1,))
            metrics[f"{variant}_mrr"], metrics[f"{variant}_recall@1"] = m[f"{variant}_mrr"], m[f"{variant}_recall@1"]
        for variant in ("true_attr", "false_attr"):
            for m in ("mrr", "recall@1"):
                metrics[f"{variant}_delta_{m}"] = metrics[f"{variant}_{m}"] - metrics[f"base_{m}"]
        n = len(metas)
        chance_mrr = sum(1.0 / r for r in range(1, n + 1)) / n
        chance = {f"{v}_{m}": c for v in variants for m, c in (("mrr", chance_mrr), ("recall@1", 1.0 / n))}
        examples = [{k: variants[k][i] for k in variants} for i in range(min(5, n))]
        return EvalResult(metrics, artifacts={"examples": examples, "n_scenes": n}, chance=chance)
