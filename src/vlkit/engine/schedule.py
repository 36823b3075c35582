"""Learning-rate schedules, stepped once per optimizer step (or per epoch: the unit is the
caller's, ``warmup_steps`` and ``total_steps`` are counted in it).

Registered names (:data:`SCHEDULES`), each a function ``lr(step, base_lr, cfg)``:

- ``cosine``: linear warm-up then cosine decay to ``min_lr`` at ``total_steps`` (open_clip's
  ``cosine_lr``). Warm-up step s < W has ``base * (f + (1 - f) * (s + 1) / W)`` with
  f = ``warmup_start_factor``: from (about) 0 at the first step to the full lr at step W - 1, so
  no step is wasted at lr 0. Step s >= W has ``min + (base - min) * (1 + cos(pi e / E)) / 2``
  with e = s - W, E = total_steps - W; after ``total_steps``: ``min_lr``.
- ``constant``: the base lr (after the same linear warm-up when ``warmup_steps > 0``).
- ``const_warmup_cosine``: the CoOp family's Dassl schedule: ``warmup_lr`` (1e-5) held for the
  warm-up, then cosine from the base lr. As Dassl, the cosine period is ``total_steps`` counted
  from the end of warm-up (``cos(pi (s - W) / total_steps)``), so the last step ends slightly
  above ``min_lr`` (Dassl steps it per epoch with ``warmup_epoch=1``).

:class:`LRSchedule` is a ``torch.optim.lr_scheduler.LRScheduler``: ``state_dict`` /
``load_state_dict`` round-trip the step count, and loading also writes the current lr into the
optimizer, so a resumed run continues with exactly the same learning rates. A run resumed with
more total steps (``engine.steps`` raised) gets the schedule rebuilt for its new length: the lr
of the saved step is recomputed from the new config (not the old run's last lr, which the cosine
had taken to ``min_lr``), and the loop says so in its log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..errors import UserError
from ..registry import Registry

__all__ = ["ScheduleConfig", "SCHEDULES", "LRSchedule", "build_scheduler"]


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | constant | const_warmup_cosine
    warmup_steps: int = 0
    total_steps: int = 0  # required by the cosine schedules
    min_lr: float = 0.0  # absolute lr at the end of the cosine
    warmup_start_factor: float = 0.0  # linear warm-up starts at this fraction of the lr
    warmup_lr: float = 1e-5  # const_warmup_cosine: the constant warm-up lr (Dassl: 1e-5)


SCHEDULES: Registry = Registry("lr schedule")


def _linear_warmup(step: int, base_lr: float, cfg: ScheduleConfig) -> float:
    start = cfg.warmup_start_factor
    return base_lr * (start + (1 - start) * (step + 1) / cfg.warmup_steps)


def _cosine(elapsed: float, period: float, base_lr: float, min_lr: float) -> float:
    if period <= 0 or elapsed >= period:
        return min_lr
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * elapsed / period))


@SCHEDULES.register("cosine")
def cosine(step: int, base_lr: float, cfg: ScheduleConfig) -> float:
    if step < cfg.warmup_steps:
        return _linear_warmup(step, base_lr, cfg)
    return _cosine(step - cfg.warmup_steps, cfg.total_steps - cfg.warmup_steps, base_lr, cfg.min_lr)


@SCHEDULES.register("constant")
def constant(step: int, base_lr: float, cfg: ScheduleConfig) -> float:
    if step < cfg.warmup_steps:
        return _linear_warmup(step, base_lr, cfg)
    return base_lr


@SCHEDULES.register("const_warmup_cosine")
def const_warmup_cosine(step: int, base_lr: float, cfg: ScheduleConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.warmup_lr
    return _cosine(step - cfg.warmup_steps, cfg.total_steps, base_lr, cfg.min_lr)


def check(cfg: ScheduleConfig) -> None:
    """Refuse, in one line, a schedule that cannot run (an unknown name, warm-up past the end)."""
    SCHEDULES.get(cfg.name)  # unknown name: UserError listing the valid ones
    if cfg.warmup_steps < 0:
        raise UserError(f"schedule warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if not 0.0 <= cfg.warmup_start_factor <= 1.0:
        raise UserError(f"warmup_start_factor must be in [0, 1], got {cfg.warmup_start_factor}")
    if cfg.name != "constant" and cfg.total_steps <= cfg.warmup_steps:
        raise UserError(
            f"schedule {cfg.name!r} needs total_steps > warmup_steps (got {cfg.total_steps} and "
            f"{cfg.warmup_steps}); lower engine.schedule.warmup_steps below {cfg.total_steps}, or train "
            "longer (engine.steps or engine.epochs; engine.schedule.total_steps, when set, must exceed "
            "the warm-up too)"
        )


class LRSchedule(LRScheduler):
    """Sets each param group's lr to ``SCHEDULES[cfg.name](step, group's base lr, cfg)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, last_epoch: int = -1):
        check(cfg)
        self.config = cfg
        self.lr_fn = SCHEDULES.get(cfg.name)
        super().__init__(optimizer, last_epoch)

    @property
    def step_count(self) -> int:
        """Steps taken so far (the step whose lr is in the optimizer now)."""
        return self.last_epoch

    def get_lr(self) -> list[float]:
        return [self.lr_fn(self.last_epoch, base, self.config) for base in self.base_lrs]

    def lr_at(self, step: int) -> list[float]:
        """The lrs the schedule gives at ``step``, without moving it (for plots and tests)."""
        return [self.lr_fn(step, base, self.config) for base in self.base_lrs]

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("optimizer", "config", "lr_fn", "resized_from")}
        state["schedule_name"] = self.config.name
        state["schedule_total_steps"] = self.config.total_steps
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue at the saved step, under *this* schedule's config: a resumed run given more
        (or fewer) total steps follows the schedule rebuilt for its new length from the saved
        step on (``resized_from`` then holds the old length, for the run's log). With the same
        config the lrs are those the saved run would have used, bit for bit."""
        state = dict(state_dict)
        name = state.pop("schedule_name", self.config.name)
        total = state.pop("schedule_total_steps", None)
        if name != self.config.name:
            raise UserError(
                f"checkpoint was trained with lr schedule {name!r} but the config says "
                f"{self.config.name!r}; resume with the same schedule"
            )
        self.__dict__.update(state)
        self.resized_from = total if total is not None and total != self.config.total_steps else None
        self._last_lr = self.get_lr()  # the lr of the saved step, by this config's schedule
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def build_scheduler(optimizer: torch.optim.Optimizer,
                    cfg: ScheduleConfig | None = None) -> LRSchedule:
    """An :class:`LRSchedule` over ``optimizer``; the optimizer's current lrs are the base lrs."""
    return LRSchedule(optimizer, cfg or ScheduleConfig(name="constant"))
