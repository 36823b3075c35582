"""Evaluators and the runner: zero-shot, retrieval, linear probe, calibration, conformal,
compositional, robustness, style-shift and reward suites, one file each, registered in :data:`EVALUATORS`.

    from vlkit.evaluate import run
    results = run(model, "shapes:color", ["zeroshot", "retrieval"], out_dir="runs/eval")

Each evaluator depends only on narrow inputs served by an :class:`EvalContext` and returns an
:class:`EvalResult`: a flat ``{metric: float}`` dict (CLIP_benchmark's names where they
exist) with ``artifacts`` and ``chance`` side channels.

Names are imported lazily (the runner imports every evaluator, which registers it), so
``vlkit --help``, which imports :mod:`vlkit.evaluate.cli`, does not load torch.
"""

from __future__ import annotations

_LAZY = {
    "EVALUATORS": "runner", "EvalResult": "base", "Evaluator": "base", "EvalContext": "context",
    "build_evaluators": "runner", "run": "runner", "write_results": "runner",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
