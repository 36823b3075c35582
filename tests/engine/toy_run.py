"""Train the toy task in its own process (for the SIGKILL resume test).

    python tests/engine/toy_run.py OUT_DIR --steps 20 [--kill-at 11] [--resume]

Uses the engine's default optimizer and schedule (AdamW + warm-up/cosine from EngineConfig).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from engine_toy import KillAt, ToyTask, toy_config, toy_data  # noqa: E402
from vlkit.engine import fit  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    hooks = [KillAt(args.kill_at)] if args.kill_at else []
    cfg = subprocess_config(args.steps)
    fit(ToyTask(custom_optim=False), toy_data(), cfg, args.out_dir, resume=args.resume, hooks=hooks)


def subprocess_config(steps: int):
    return toy_config(steps=steps, checkpoint_every=5, keep_last=2,
                      optim={"name": "adamw", "lr": 1e-2, "weight_decay": 0.01},
                      schedule={"name": "cosine", "warmup_steps": 3})


if __name__ == "__main__":
    main()
