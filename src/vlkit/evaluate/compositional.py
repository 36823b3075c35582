"""Compositional probes: does the true caption beat one that uses the same words differently?

In the spirit of Winoground (arXiv 2204.03162) and ARO ("When and why vision-language models
behave like bags-of-words", arXiv 2210.01936): for each image, the model scores its true
caption against distractors built from the sample's metadata, and gets credit when the true
caption scores highest. A bag-of-words model cannot tell "a red circle left of a blue square"
from "a blue circle left of a red square", so it lands exactly at chance.

Probes, chosen from the metadata (``probes="auto"``):

- shapes scenes (vlkit.data.shapes): ``color_swap`` (colors of the two related objects
  exchanged), ``size_swap`` (sizes exchanged), ``relation_swap`` ("A left of B" -> "B left of
  A"); a probe is skipped where the swap would not change the caption.
- OpenMoji (vlkit.data.openmoji): ``skin_tone`` (a skin-tone variant's name with another tone)
  and ``sibling_swap`` (the name of the emoji in the same subgroup sharing most words with it,
  e.g. "grinning face with big eyes" vs "grinning face with smiling eyes").

Scoring: credit 1 when the true caption's cosine beats every distractor, 1 / (1 + ties) when
it ties the best one (within ``tie_tol``: the expected credit of a random tie-break), 0
otherwise. Metrics ``{probe}_acc`` and ``acc`` (all probes), chance = 1 / (1 + distractors).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..registry import Registry
from .base import EVALUATORS, EvalResult, Evaluator
from .scenes import first_relation, is_scene, scene_caption

Probe = tuple[int, str, str, list[str]]  # (image index, probe kind, true caption, distractors)

PROBE_SETS: Registry[type] = Registry("compositional probe set")


@PROBE_SETS.register("shapes")
class ShapesProbes:
    """Attribute and relation swaps between the two objects of a scene's first relation."""

    @staticmethod
    def applies(metas: list[dict]) -> bool:
        return all(is_scene(m) for m in metas)

    def build(self, metas: list[dict], rng: random.Random) -> list[Probe]:
        probes: list[Probe] = []
        for idx, meta in enumerate(metas):
            rel = first_relation(meta)
            if rel is None:
                continue  # one object: nothing to swap
            i, j, word = rel
            objs = meta["objects"]
            for attr in ("color", "size"):
                attrs = ("size", "color") if attr == "size" else ("color",)
                if objs[i].get(attr) is None or objs[i].get(attr) == objs[j].get(attr):
                    continue
                swapped = [dict(o) for o in objs]
                swapped[i][attr], swapped[j][attr] = objs[j][attr], objs[i][attr]
                true = scene_caption(meta, attrs)
                probes.append((idx, f"{attr}_swap", true, [scene_caption(meta, attrs, swapped)]))
            flipped = {**meta, "relations": [[j, i, word]]}
            probes.append((idx, "relation_swap", scene_caption(meta), [scene_caption(flipped)]))
        return probes


TONES = ["light", "medium-light", "medium", "medium-dark", "dark"]
_TONE = re.compile(r"\b(light|medium-light|medium|medium-dark|dark) skin tone")


@PROBE_SETS.register("openmoji")
class EmojiProbes:
    """Changed modifiers of emoji names: another skin tone, or the closest sibling's name."""

    @staticmethod
    def applies(metas: list[dict]) -> bool:
        return all("name" in m and "subgroup" in m for m in metas)

    def build(self, metas: list[dict], rng: random.Random) -> list[Probe]:
        by_subgroup: dict[str, list[str]] = {}
        for m in metas:
            if not m.get("skin_tone"):
                by_subgroup.setdefault(m["subgroup"], []).append(m["name"])
        probes: list[Probe] = []
        for idx, m in enumerate(metas):
            name = m["name"]
            if m.get("skin_tone") and _TONE.search(name):
                tone = _TONE.search(name).group(1)
                other = rng.choice([t for t in TONES if t != tone])
                probes.append((idx, "skin_tone", name, [_TONE.sub(f"{other} skin tone", name, count=1)]))
            elif not m.get("skin_tone"):
                sibling = self._closest(name, by_subgroup.get(m["subgroup"], []), rng)
                if sibling is not None:
                    probes.append((idx, "sibling_swap", name, [sibling]))
        return probes

    @staticmethod
    def _closest(name: str, names: list[str], rng: random.Random) -> str | None:
        """The sibling sharing the most words (at least one); ties broken by the seeded rng."""
        words = set(name.lower().replace(":", " ").split())
        scored = [(len(words & set(n.lower().replace(":", " ").split())), n) for n in names if n != name]
        scored = [s for s in scored if s[0] > 0]
        if not scored:
            return None
        best = max(s for s, _ in scored)
        return rng.choice(sorted(n for s, n in scored if s == best))


def probe_credit(true_scores: torch.Tensor, distractor_scores: torch.Tensor, tie_tol: float = 1e-6) -> torch.Tensor:
    """(P,) credit per probe: 1 if the true caption wins, 1/(1+ties) if it ties the best, else 0.

    true_scores: (P,); distractor_scores: (P, K).
    """
    best = distractor_scores.max(dim=1).values  # (P,)
    ties = ((distractor_scores - true_scores[:, None]).abs() <= tie_tol).sum(dim=1)  # (P,)
    win = true_scores > best + tie_tol
    tied = (true_scores - best).abs() <= tie_tol
    return torch.where(win, 1.0, torch.where(tied, 1.0 / (1 + ties).double(), 0.0)).double()


@dataclass
class CompositionalConfig:
    split: str = "test"
    probes: str = "auto"  # "auto" (from the metadata), "shapes" or "openmoji"
    template: str = "{}"  # wraps every caption (true and distractors alike), e.g. "an emoji of {}."
    tie_tol: float = 1e-6  # cosine differences this small count as ties


@EVALUATORS.register("compositional")
class Compositional(Evaluator):
    """Accuracy of picking the true caption over attribute/relation/modifier swaps."""

    name = "compositional"
    Config = CompositionalConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg = self.config
        metas = ctx.meta(cfg.split)
        probe_set = self._probe_set(metas)
        probes = probe_set.build(metas, random.Random(ctx.seed))
        if not probes:
            raise UserError(
                f"compositional: no probe could be built from split {cfg.split!r}; "
                "it needs scenes with 2+ objects, or emoji with siblings in their subgroup"
            )
        wrap = lambda text: cfg.template.replace("{}", text)  # noqa: E731
        images = ctx.image_features(cfg.split)[[p[0] for p in probes]]  # (P, D)
        n_distractors = len(probes[0][3])
        true_feats = ctx.encode_text([wrap(p[2]) for p in probes])  # (P, D)
        dis_feats = ctx.encode_text([wrap(d) for p in probes for d in p[3]]).view(len(probes), n_distractors, -1)
        true_scores = (images * true_feats).sum(-1)  # (P,)
        dis_scores = torch.einsum("pd,pkd->pk", images, dis_feats)  # (P, K)
        credit = probe_credit(true_scores, dis_scores, cfg.tie_tol)
        kinds = sorted({p[1] for p in probes})
        metrics = {f"{k}_acc": credit[[p[1] == k for p in probes]].mean().item() for k in kinds}
        metrics["acc"] = credit.mean().item()
        chance = 1.0 / (1 + n_distractors)
        examples = [{"image": p[0], "kind": p[1], "true": p[2], "distractors": p[3], "credit": float(c)}
                    for p, c in zip(probes[:8], credit)]
        return EvalResult(
            metrics,
            artifacts={"n_probes": {k: sum(p[1] == k for p in probes) for k in kinds}, "examples": examples},
            chance={k: chance for k in metrics},
        )

    def _probe_set(self, metas):
        if self.config.probes != "auto":
            return PROBE_SETS.get(self.config.probes)()
        for name, cls in PROBE_SETS.items():
            if cls.applies(metas):
                return cls()
        raise UserError(
            "compositional: the samples' metadata has neither shapes objects nor emoji names; "
            "run it on shapes or openmoji, or set compositional.probes"
        )
