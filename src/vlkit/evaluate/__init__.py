"""Evaluators and the runner: zero-shot, retrieval, linear probe, calibration, conformal,
compositional, robustness and reward suites, one file each, registered in :data:`EVALUATORS`.

    from vlkit.evaluate import run
    results = run(model, "shapes:color", ["zeroshot", "retrieval"], out_dir="runs/eval")

Each evaluator depends only on narrow inputs served by an :class:`EvalContext` and returns an
:class:`EvalResult`: a flat ``{metric: float}`` dict (CLIP_benchmark's names where they
exist) with ``artifacts`` and ``chance`` side channels.
"""

from . import (  # noqa: F401  (importing registers the evaluators)
    calibration,
    compositional,
    conformal,
    linear_probe,
    retrieval,
    reward,
    robustness,
    zeroshot,
)
from .base import EVALUATORS, EvalResult, Evaluator
from .context import EvalContext
from .runner import build_evaluators, run, write_results

__all__ = ["EVALUATORS", "EvalContext", "EvalResult", "Evaluator", "build_evaluators", "run", "write_results"]
