"""`vlkit pretrain` under torchrun: two CPU processes (gloo) split each global batch and train
the model one process trains with the whole batch; rank 0 alone writes the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from torchrun_launch import launch_like_torchrun
from vlkit.cli import main

ROOT = Path(__file__).resolve().parents[2]


def recipe_args(out: Path) -> list[str]:
    return ["pretrain", str(ROOT / "configs/pretrain/shapes-clip.yaml"), "model=preset:tiny-clip",
            "objectives=[{name: clip}]", "data.max_samples=64", "data.caption=first", "engine.steps=3",
            "engine.batch_size=16", "engine.schedule.warmup_steps=1", "engine.log_every=1",
            "engine.progress=false", "engine.tensorboard=false", "engine.checkpoint_every=0",
            "engine.precision=fp32", "eval.data=null", f"out_dir={out}"]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_pretrain_matches_one_process_with_the_global_batch(tmp_path):
    launch_like_torchrun(["-m", "vlkit", *recipe_args(tmp_path / "ddp")], nproc=2, timeout=300)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers ran: the same kernels, the same sums
    try:
        assert main(recipe_args(tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)

    ddp, one = tmp_path / "ddp", tmp_path / "one"
    assert len(losses(ddp)) == 3, "rank 0 alone logs: one line per step"
    for a, b in zip(losses(ddp), losses(one)):
        assert abs(a - b) < 1e-4 * max(1.0, abs(b)), (losses(ddp), losses(one))
    w_ddp, w_one = load_file(ddp / "model" / "model.safetensors"), load_file(one / "model" / "model.safetensors")
    assert w_ddp.keys() == w_one.keys()
    for name in w_one:
        torch.testing.assert_close(w_ddp[name], w_one[name], rtol=1e-4, atol=1e-5, msg=name)
