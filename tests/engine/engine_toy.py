"""Toy tasks and data for the engine tests (imported by the tests and by the subprocess scripts).

The toy regression task is small enough that a step takes well under a millisecond, yet has
everything exact resume must get right: dropout (torch RNG), a shuffled loader, AdamW state,
an lr schedule, and task state outside the module (``extra_state``).
"""

from __future__ import annotations

import math
import os
import signal

import torch
from torch import nn

from vlkit.engine import DatasetBatches, EngineConfig, Hook


def toy_dataset(n: int = 64, dim: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.randn(dim, generator=g) / dim**0.5  # (n,)
    return list(zip(x, y))


def toy_data(n: int = 64, batch_size: int = 8, seed: int = 0) -> DatasetBatches:
    return DatasetBatches(toy_dataset(n), batch_size, seed=seed)


class ToyTask:
    """An MLP with dropout regressing y; two loss terms; counts its steps as extra state.

    ``custom_optim``: AdamW + LambdaLR (warm-up + cosine) built here, through the task's
    ``configure_optimizers``; otherwise the engine's defaults from ``EngineConfig.optim``.
    """

    def __init__(self, width: int = 16, dropout: float = 0.2, init_seed: int = 0,
                 custom_optim: bool = True, nan_at_step: int | None = None):
        torch.manual_seed(init_seed)
        self.module = nn.Sequential(
            nn.Linear(8, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1)
        )
        self.custom_optim = custom_optim
        self.nan_at_step = nan_at_step
        self.calls = 0
        if not custom_optim:
            self.configure_optimizers = None  # the loop then uses vlkit.engine.optim/schedule

    def configure_optimizers(self, cfg, total_steps):
        opt = torch.optim.AdamW(self.module.parameters(), lr=1e-2, weight_decay=0.01)
        warmup = 3

        def factor(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def training_step(self, batch, state):
        x, y = batch  # (B, 8), (B,)
        self.calls += 1
        pred = state.model(x).squeeze(-1)  # (B,)
        mse = ((pred - y) ** 2).mean()
        if self.nan_at_step is not None and state.step + 1 == self.nan_at_step:
            mse = mse * float("nan")
        return {"mse_loss": mse, "l1_loss": 0.01 * (pred - y).abs().mean()}

    def extra_state(self):
        return {"calls": self.calls}

    def load_extra_state(self, state):
        self.calls = state["calls"]


def toy_config(**overrides) -> EngineConfig:
    base = dict(epochs=2, batch_size=8, precision="fp32", progress=False, log_every=1,
                checkpoint_every=4, keep_last=0, tensorboard=False, seed=0)
    base.update(overrides)
    return EngineConfig(**base)


class KillAt(Hook):
    """SIGKILL this process at the end of step ``step`` (a crash nothing can catch)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class CrashAfterCheckpoint(Hook):
    """Raise right after the checkpoint of ``step`` is written (an in-process 'kill')."""

    def __init__(self, step: int):
        self.step = step

    def on_checkpoint(self, state, path):
        if state.step == self.step:
            raise RuntimeError(f"simulated crash after {path.name}")


def curve(history, keys=("loss", "mse_loss", "l1_loss", "lr")) -> list[tuple]:
    """The comparable part of metrics lines (no wall time or speed)."""
    return [(r["step"], r["epoch"], *(r[k] for k in keys)) for r in history]
