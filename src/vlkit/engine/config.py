"""The engine's config (:class:`EngineConfig`) and what :func:`~vlkit.engine.fit` returns.

``optim`` and ``schedule`` are plain mappings checked at fit time against
``vlkit.engine.optim.OptimConfig`` and ``vlkit.engine.schedule.ScheduleConfig`` (unknown keys
fail there with the list of valid ones); instances of those dataclasses are accepted too.
``schedule.total_steps`` left at 0 is filled with the run's total steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from .trackers import require


@dataclass
class EngineConfig:
    epochs: int = 1  # passes over the data (ignored when ``steps`` is set)
    steps: int | None = None  # total optimizer steps; when set, wins over ``epochs``
    batch_size: int = 64  # global batch (all ranks together); used by DatasetBatches
    optim: Any = field(default_factory=dict)  # OptimConfig fields: name, lr, weight_decay, ...
    schedule: Any = field(default_factory=dict)  # ScheduleConfig fields; None: constant lr
    grad_clip: float | None = None  # max global grad norm; None or 0: no clipping
    precision: Literal["fp32", "bf16", "amp", "auto"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False  # torch.compile the task's towers (see vlkit.engine.compile); slow start
    distributed: bool = False  # require torchrun (a torchrun run with >1 process is DDP anyway)
    find_unused_parameters: bool = False  # DDP: set when some parameters skip the forward
    checkpoint_every: int = 1000  # steps between checkpoints; 0: only the final one
    keep_last: int = 2  # checkpoints kept on disk; 0: keep all
    log_every: int = 10  # steps between metrics lines (the last step is always logged)
    seed: int = 0  # torch/numpy/random seed (+ rank) and the data order seed
    num_workers: int = 0  # DataLoader worker processes (batches stay exact: Collate reseeds per sample)
    progress: bool = True  # tqdm bar on rank 0
    # trackers besides metrics.jsonl (vlkit.engine.trackers); each an extra: pip install 'vlkit[wandb]'
    log_to: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)
    wandb_project: str = "vlkit"  # log_to wandb: the project (offline unless WANDB_MODE says otherwise)
    tensorboard: bool = False  # the old form of log_to: [tensorboard]
    save_safetensors: bool = True  # write <out_dir>/model.safetensors at the end

    def validate(self) -> None:
        checks = [
            (self.epochs < 0 or (self.steps is None and self.epochs < 1), f"epochs must be >= 1, got {self.epochs}"),
            (self.steps is not None and self.steps < 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size < 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.log_every < 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.checkpoint_every < 0, "checkpoint_every must be >= 0 (0: only at the end)"),
            (self.keep_last < 0, "keep_last must be >= 0 (0: keep every checkpoint)"),
            (self.grad_clip is not None and not self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.num_workers < 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.seed < 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for bad, message in checks:
            if bad:
                raise UserError(f"engine config: {message}")
        require(self.trackers())  # a tracker that is not installed: one line naming its extra

    def trackers(self) -> list[str]:
        """``log_to``, with ``tensorboard`` added where the old ``tensorboard: true`` asks for it."""
        names = list(self.log_to)
        return names + ["tensorboard"] if self.tensorboard and "tensorboard" not in names else names


@dataclass
class FitResult:
    """What a finished (or early-stopped) run leaves behind."""

    step: int  # optimizer steps done in total (across resumes)
    epoch: int  # epoch of the next batch (== epochs when a full run finished)
    losses: dict[str, float]  # the last step's loss terms (mean over ranks)
    history: list[dict[str, Any]]  # every metrics line of the run (as in metrics.jsonl)
    checkpoint: Path | None  # the last checkpoint written
    out_dir: Path
    samples_per_s: float  # global samples per second over this process's training time
    model_path: Path | None = None  # <out_dir>/model.safetensors when written
    stopped_early: bool = False  # a hook set state.should_stop
