"""``engine.compile: true``: run the task's heavy submodules through ``torch.compile``.

A task names what to compile with ``compile_targets() -> list[nn.Module]`` (a contrastive task:
its two towers); without it the whole task module is compiled. Each target is compiled in
place (``nn.Module.compile``), so parameter names, checkpoints and saved models are unchanged
and DDP wraps the same module. Compiling the towers rather than the step keeps Python-side
work (feature-cache lookups, the loss schedule's float ``progress``) out of the graph, so it
does not recompile every step.

The first steps pay the compilation (a minute or more on a 2-core CPU for a 6-layer ViT plus
text transformer; ``benchmarks/pretrain_throughput.py`` prints each run's whole time next to
its steady-state speed), so it pays off on runs of many minutes, not on smoke runs. On a CPU, inductor needs a
C++ compiler; without one the run is refused before training starts.
"""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from ..errors import UserError

_CXX = ("g++", "c++", "clang++")


def _has_cxx() -> bool:
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(_CXX)
    return any(shutil.which(n) for n in names)


def compile_task(task, device: torch.device) -> list[str]:
    """Compile the task's targets in place; returns their class names (for the run's note)."""
    if device.type == "cpu" and not _has_cxx():
        raise UserError("engine.compile needs a C++ compiler on CPU (g++ or clang++, or $CXX); "
                        "install one or set engine.compile=false")
    targets = task.compile_targets() if hasattr(task, "compile_targets") else [task.module]
    names = []
    for module in targets:
        if not isinstance(module, nn.Module):
            raise UserError(f"compile_targets() must return nn.Modules, got {type(module).__name__}")
        module.compile()
        names.append(type(module).__name__)
    return names
