"""Experiment trackers a run can report to besides ``metrics.jsonl``: TensorBoard and Weights &
Biases, as open_clip_train's ``--report-to tensorboard,wandb``.

Chosen with ``engine.log_to`` (a list, or a comma-separated string on the command line:
``engine.log_to=tensorboard,wandb``). Neither package is a dependency of vlkit: each is an extra
(``pip install 'vlkit[tensorboard]'``, ``'vlkit[wandb]'``), and asking for one that is not
installed fails before training, in one line naming the extra.

- ``tensorboard``: event files under ``<out_dir>/tensorboard`` (``tensorboard --logdir runs``);
  every numeric field of each metrics line as ``train/<field>`` at its step.
- ``wandb``: a run under ``<out_dir>/wandb``, project ``engine.wandb_project``, named after the
  run directory, with the engine config; the same ``train/<field>`` scalars. It runs in
  ``WANDB_MODE`` when that is set and **offline** otherwise, so a run never waits on the network;
  upload later with ``wandb sync <out_dir>/wandb/offline-run-*`` (or set ``WANDB_MODE=online``).

Only rank 0 reports (the logger opens trackers there only).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError

# tracker -> (the module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def require(names: Iterable[str]) -> None:
    """One line naming the extra to install when a chosen tracker's package is missing."""
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"engine.log_to: unknown tracker {name!r}; use {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"engine.log_to={name} needs the {module} package, which is not installed; "
                            f"pip install 'vlkit[{extra}]' (or drop {name} from engine.log_to)")


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics line (``step`` is the x axis, not a series)."""
    return {f"train/{k}": v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, out_dir: Path, **_: Any):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, record: Mapping[str, Any]) -> None:
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, out_dir: Path, project: str = "vlkit", config: Mapping[str, Any] | None = None):
        wandb = importlib.import_module("wandb")
        mode = os.environ.get("WANDB_MODE") or "offline"  # never wait on the network unless told
        self.run = wandb.init(project=project, name=Path(out_dir).resolve().name, dir=str(out_dir),
                              config=dict(config or {}), mode=mode)

    def log(self, record: Mapping[str, Any]) -> None:
        self.run.log(_scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": TensorBoard, "wandb": WandB}


def open_trackers(names: Iterable[str], out_dir: str | Path, *, project: str = "vlkit",
                  config: Mapping[str, Any] | None = None) -> list:
    """The trackers named (each once, in order), opened for ``out_dir``."""
    names = list(dict.fromkeys(names))
    require(names)
    return [_CLASSES[n](Path(out_dir), project=project, config=config) for n in names]
