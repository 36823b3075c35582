"""What the engine trains (a :class:`Task`), what it tells it (:class:`TrainState`), and
how other code plugs into the loop without forking it (:class:`Hook`).

A task is any object with

- ``module``: the ``nn.Module`` holding every trainable parameter. The engine moves it to the
  device, wraps it in DDP in distributed runs, builds the optimizer over it and checkpoints its
  ``state_dict()``. Frozen parts may live inside it (they are checkpointed too) or outside it
  (move them in ``on_fit_start`` with ``state.device``; they are not checkpointed).
- ``training_step(batch, state) -> dict`` of tensors. Run the forward pass **through**
  ``state.model`` (the DDP wrapper in distributed runs, else ``module`` itself): DDP averages the
  gradients only for computation that went through its ``forward``. The loss is ``out["loss"]``
  when present, else the sum of every key ending in ``_loss``. Other 0-dim tensors are logged
  (averaged over the ranks, so every rank must return the same keys).

and optionally (looked up by name; missing ones are skipped):

- ``on_fit_start(state)``, ``on_step_end(state)`` (after the optimizer and scheduler step:
  clamp ``logit_scale`` to ln 100, momentum-encoder update), ``on_epoch_end(state)``,
  ``on_fit_end(state)``;
- ``extra_state() -> dict`` / ``load_extra_state(dict)``: state outside ``module`` to
  checkpoint (ALBEF's feature queues); tensors, numbers, strings, lists and dicts only;
- ``configure_optimizers(cfg, total_steps) -> optimizer | (optimizer, scheduler)`` to replace
  the default ``vlkit.engine.optim`` / ``vlkit.engine.schedule`` builders;
- ``compile_targets() -> list[nn.Module]``: what ``EngineConfig.compile`` compiles (default:
  ``module``), see :mod:`.compile`.

:class:`ModuleTask` turns a module whose ``forward(batch)`` returns that dict (an adaptation
method) into a task. A :class:`Hook` gets the same calls plus ``on_checkpoint(state, path)`` and
may keep state across a resume (``state_dict`` / ``load_state_dict``): an evaluator run every
N steps (``state.record(metric=value)`` adds to the step's metrics line) or early stopping
(``state.should_stop = True`` ends the run after the current step, with a final checkpoint).
Hooks run after the task's own hook of the same name, in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import UserError
from .distributed import DistInfo


@runtime_checkable
class Task(Protocol):
    module: nn.Module

    def training_step(self, batch: Any, state: "TrainState") -> dict[str, torch.Tensor]: ...


@dataclass
class TrainState:
    """The loop's position and handles, passed to ``training_step`` and to every hook.

    ``step`` counts optimizer steps done; ``epoch``/``batch`` point at the next batch to train
    on (inside ``training_step``: the current one). ``progress`` = step / total_steps in [0, 1]
    (e.g. ALBEF's alpha ramp, LightCLIP's label softening schedule).
    """

    total_steps: int
    batches_per_epoch: int
    dist: DistInfo
    out_dir: Path
    model: nn.Module  # what training_step calls: the DDP wrapper, or ``module``
    module: nn.Module  # the unwrapped task module
    optimizer: Any = None
    scheduler: Any = None
    cfg: Any = None
    step: int = 0
    epoch: int = 0
    batch: int = 0
    losses: dict[str, float] = field(default_factory=dict)  # the last step's scalars
    should_stop: bool = False
    last_checkpoint: Path | None = None
    pending: dict[str, Any] = field(default_factory=dict)  # filled by record()

    @property
    def progress(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def local_rank(self) -> int:
        return self.dist.local_rank

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    def record(self, **values: Any) -> None:
        """Add values (validation metrics, ...) to this step's metrics line; forces the line."""
        self.pending.update(values)


class Hook:
    """Base class for loop plug-ins; override what you need. All calls happen on every rank.

    A hook's ``state_dict()`` is checkpointed and handed back to the hook at the same position
    (and of the same class) in ``hooks`` when the run resumes.
    """

    def on_fit_start(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_checkpoint(self, state: TrainState, path: Path) -> None: ...

    def on_fit_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TaskHooks(Hook):
    """The task's optional hook methods, seen as a Hook (so the loop has one list to call)."""

    def __init__(self, task: Task):
        self.task = task

    def _call(self, name: str, *args):
        fn = getattr(self.task, name, None)
        return fn(*args) if callable(fn) else None

    def on_fit_start(self, state):
        self._call("on_fit_start", state)

    def on_step_end(self, state):
        self._call("on_step_end", state)

    def on_epoch_end(self, state):
        self._call("on_epoch_end", state)

    def on_fit_end(self, state):
        self._call("on_fit_end", state)

    def state_dict(self):
        return self._call("extra_state") or {}

    def load_state_dict(self, state):
        if state:
            self._call("load_extra_state", state)


class ModuleTask:
    """A task from a module whose ``forward(batch)`` returns ``{"loss" | "*_loss": ...}``."""

    def __init__(self, module: nn.Module):
        self.module = module

    def training_step(self, batch: Any, state: TrainState) -> dict[str, torch.Tensor]:
        return state.model(batch)


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts, lists and tuples to ``device``; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not isinstance(batch, str):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(moved) if isinstance(batch, list) else tuple(moved)
    return batch


def loss_terms(out: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss to backpropagate, every scalar to log); the loss is ``loss`` or the ``*_loss`` sum."""
    if not isinstance(out, dict):
        raise UserError(f"training_step must return a dict of tensors, got {type(out).__name__}")
    scalars = {
        k: (v if isinstance(v, torch.Tensor) else torch.tensor(float(v))).detach().float()
        for k, v in out.items()
        if (isinstance(v, torch.Tensor) and v.numel() == 1) or isinstance(v, (int, float))
    }
    if isinstance(out.get("loss"), torch.Tensor):
        loss = out["loss"]
    else:
        parts = [v for k, v in out.items() if k.endswith("_loss") and isinstance(v, torch.Tensor)]
        if not parts:
            raise UserError(
                f"training_step returned no 'loss' and no '*_loss' key (got {sorted(out)}); "
                "return the loss under 'loss' or a name ending in '_loss'"
            )
        loss = torch.stack([p.reshape(()).float() for p in parts]).sum()
        scalars["loss"] = loss.detach().float()
    return loss.reshape(()), scalars
