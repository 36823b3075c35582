"""Weighted sums of objectives, built from config entries.

``build([{"name": "clip", "weight": 1.0}, {"name": "lightclip", "weight": 0.5, "eps_max": 0.2}])``
looks each name up in :data:`OBJECTIVES`, builds its config dataclass from the remaining keys
(unknown names and keys fail with the valid ones listed) and returns a
:class:`CompositeObjective`. Its output dict holds, for each term ``name`` and each of its loss
keys ``k``:

- ``"name.k"``: the weighted term (``weight * value``); these keys sum to ``"loss"``,
- ``"name.k_unweighted"``: the term as the objective returned it (for logging),
- ``"loss"``: the total, which the training loop uses as is.

Non-loss outputs of a term (none today) are passed through as ``"name.key"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import config as vconfig
from ..errors import UserError
from .base import OBJECTIVES, Objective

_SPEC_KEYS = ("name", "weight")


def create(name: str, options: Mapping[str, Any] | None = None) -> Objective:
    """One objective by registry name, its config built from ``options``."""
    cls = OBJECTIVES.get(name)
    cfg = vconfig.build(cls.Config, dict(options or {}), prefix=f"objectives.{name}.")
    return cls(cfg)


class CompositeObjective(nn.Module):
    """Sum of weighted objectives; each term keeps its own keys under its name."""

    def __init__(self, terms: Sequence[tuple[str, float, Objective]]):
        super().__init__()
        if not terms:
            raise UserError("no objectives given; list at least one, e.g. [{name: clip}]")
        self.weights = {name: float(w) for name, w, _ in terms}
        self.terms = nn.ModuleDict({name: obj for name, _, obj in terms})

    @property
    def logit_scale_range(self) -> tuple[float, float]:
        """The range every term accepts (the engine clamps ``logit_scale`` to it)."""
        los, his = zip(*(t.logit_scale_range for t in self.terms.values()))
        return max(los), min(his)

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(sorted({k for t in self.terms.values() for k in t.requires}))

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        out: dict[str, torch.Tensor] = {}
        total = None
        for name, objective in self.terms.items():
            weight = self.weights[name]
            for key, value in objective(
                image_features, text_features, logit_scale, logit_bias, **extra
            ).items():
                if not key.endswith("_loss"):
                    out[f"{name}.{key}"] = value
                    continue
                weighted = weight * value
                out[f"{name}.{key}"] = weighted
                out[f"{name}.{key}_unweighted"] = value
                total = weighted if total is None else total + weighted
        out["loss"] = total
        return out


def _entry(index: int, spec: Any) -> tuple[str, float, dict]:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise UserError(
            f"objective entry {index} must be a mapping with a 'name' (valid: "
            f"{', '.join(OBJECTIVES.names())}), e.g. {{name: clip, weight: 1.0}}"
        )
    name = str(spec["name"])
    cls = OBJECTIVES.get(name)
    options = {k: v for k, v in spec.items() if k not in _SPEC_KEYS}
    valid = sorted(vconfig.fields_of(cls.Config)) + list(_SPEC_KEYS)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise UserError(
            f"unknown key {unknown[0]!r} for objective {name!r}; valid keys: {', '.join(valid)}"
        )
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise UserError(f"objective {name!r}: weight must be a number, got {weight!r}")
    return name, float(weight), options


def build(specs: Sequence[Mapping[str, Any] | str] | Mapping[str, Any] | str) -> CompositeObjective:
    """A :class:`CompositeObjective` from config entries (a list, one mapping or one name)."""
    if isinstance(specs, (str, Mapping)):
        specs = [specs]
    terms = []
    for index, spec in enumerate(specs):
        name, weight, options = _entry(index, spec)
        if any(name == t[0] for t in terms):
            raise UserError(f"objective {name!r} is listed twice; list each objective once")
        terms.append((name, weight, create(name, options)))
    return CompositeObjective(terms)
