"""CLIP as a reward model: does the reward order scenes by how much of the goal they meet?

"Vision-Language Models are Zero-Shot Reward Models for Reinforcement Learning" (VLM-RM,
Rocamonde et al., arXiv 2310.12921; AlignmentResearch/vlmrm). With g the mean of the
normalised goal-prompt embeddings and b the same for baseline prompts, d = g - b and

    P = alpha d d^T / |d|^2 + (1 - alpha) I,     R(x) = 1 - 0.5 |(x - g) P|^2

for a normalised image embedding x. alpha = 0 is plain CLIP similarity x.g; alpha = 1 keeps
only the component along the goal-baseline direction.

Deviations: g and b are renormalised after averaging (so alpha = 0 is exactly the cosine),
and instead of an RL return the "ground truth" is how much of the goal a shapes scene meets:
the most goal attributes any single object has (goal "a red circle": 2 for a red circle, 1 for
a red square or a blue circle, 0 otherwise). Metrics: ``spearman_alpha_{a}`` between reward
and that count over the split, for each alpha (chance 0). The goal defaults to the most common
color and shape in the split.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from ..errors import UserError
from .base import EVALUATORS, EvalResult, Evaluator
from .scenes import require_scenes

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]


def vlmrm_reward(images: torch.Tensor, goal: torch.Tensor, baseline: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N,) rewards of normalised image embeddings (N, D) for goal/baseline directions (D,)."""
    d = goal - baseline
    eye = torch.eye(len(goal), dtype=images.dtype)
    proj = alpha * torch.outer(d, d) / d.dot(d).clamp(min=1e-12) + (1 - alpha) * eye  # (D, D)
    return 1 - 0.5 * ((images - goal[None, :]) @ proj).pow(2).sum(dim=1)


def goal_degree(meta: dict, goal: dict[str, str]) -> int:
    """How much of the goal the scene meets: the most goal attributes one object matches."""
    return max(sum(str(o.get(k)) == str(v) for k, v in goal.items()) for o in meta["objects"])


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x.numpy(), y.numpy()).statistic)


def default_goal(metas: list[dict]) -> dict[str, str]:
    objs = [o for m in metas for o in m["objects"]]
    return {a: Counter(str(o[a]) for o in objs).most_common(1)[0][0] for a in ("color", "shape")}


@dataclass
class RewardConfig:
    split: str = "test"
    goal: dict = field(default_factory=dict)  # object attributes, e.g. {color: red, shape: circle}; {} = most common
    goal_prompts: list[str] | None = None  # default: built from the goal ("a red circle", ...)
    baseline_prompts: list[str] = field(default_factory=lambda: ["a shape", "a picture of shapes"])
    alphas: list[float] = field(default_factory=lambda: list(ALPHAS))


@EVALUATORS.register("reward")
class Reward(Evaluator):
    """Spearman correlation between the VLM-RM reward and the goal attributes a scene meets."""

    name = "reward"
    Config = RewardConfig

    def evaluate(self, ctx) -> EvalResult:
        cfg = self.config
        metas = ctx.meta(cfg.split)
        require_scenes(metas, "reward")
        goal = {str(k): str(v) for k, v in (cfg.goal or default_goal(metas)).items()}
        self._check_goal(goal, metas)
        if any(not 0 <= a <= 1 for a in cfg.alphas):
            raise UserError(f"reward: alphas {cfg.alphas} must lie in [0, 1]; e.g. alphas=[0,0.5,1]")
        phrase = " ".join(goal[k] for k in ("size", "color", "shape") if k in goal)
        prompts = cfg.goal_prompts or [f"a {phrase}", f"a picture of a {phrase}"]
        g = F.normalize(ctx.encode_text(prompts).mean(0), dim=0)  # (D,)
        b = F.normalize(ctx.encode_text(cfg.baseline_prompts).mean(0), dim=0)  # (D,)
        images = ctx.image_features(cfg.split)  # (N, D)
        degree = torch.tensor([goal_degree(m, goal) for m in metas], dtype=torch.float64)
        metrics, by_level = {}, {}
        for alpha in cfg.alphas:
            reward = vlmrm_reward(images.double(), g.double(), b.double(), alpha)
            key = f"spearman_alpha_{alpha:g}"
            metrics[key] = spearman(reward, degree)
            by_level[f"{alpha:g}"] = {int(lv): reward[degree == lv].mean().item() for lv in degree.unique().tolist()}
        return EvalResult(
            metrics,
            artifacts={
                "goal": goal,
                "goal_prompts": prompts,
                "baseline_prompts": list(cfg.baseline_prompts),
                "mean_reward_by_degree": by_level,
                "degree_counts": {int(k): int(v) for k, v in zip(*degree.unique(return_counts=True))},
            },
            chance={k: 0.0 for k in metrics},
        )

    @staticmethod
    def _check_goal(goal: dict, metas: list[dict]) -> None:
        for attr, value in goal.items():
            seen = sorted({str(o.get(attr)) for m in metas for o in m["objects"] if o.get(attr) is not None})
            if value not in seen:
                raise UserError(
                    f"reward: goal {attr}={value!r} never occurs in the split; seen: {', '.join(seen) or 'none'}"
                )
