"""Exact resume: a run stopped (by an exception, or by SIGKILL in another process) and resumed
gives the same loss curve and weights as a run never stopped; clear errors when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_toy import CrashAfterCheckpoint, ToyTask, curve, toy_config, toy_data
from toy_run import subprocess_config
from vlkit.engine import fit, latest_checkpoint
from vlkit.engine.logger import read_metrics
from vlkit.errors import UserError

HERE = Path(__file__).parent


@pytest.mark.parametrize("crash_step", [4, 8])  # mid-epoch, and at an epoch's end
def test_crashed_then_resumed_run_equals_uninterrupted_run(tmp_path, crash_step):
    cfg = toy_config(epochs=2, checkpoint_every=4)  # 8 batches per epoch, 16 steps
    full_task = ToyTask()
    full = fit(full_task, toy_data(), cfg, tmp_path / "full")

    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(ToyTask(), toy_data(), cfg, out, hooks=[CrashAfterCheckpoint(crash_step)])
    # A new process would build the task afresh: other initial weights must not matter.
    resumed_task = ToyTask(init_seed=123)
    resumed = fit(resumed_task, toy_data(), cfg, out, resume=True)

    assert resumed.step == full.step == 16
    assert curve(read_metrics(out / "metrics.jsonl")) == curve(full.history)  # bit-exact
    assert curve(resumed.history) == curve(full.history)
    resumed_weights = resumed_task.module.state_dict()
    for name, weight in full_task.module.state_dict().items():
        assert torch.equal(resumed_weights[name], weight)
    assert resumed_task.calls == full_task.calls == 16  # task state (extra_state) came back


@pytest.mark.parametrize("name", ["lion", "muon"])  # optimizers with vlkit's own state layouts
def test_resume_is_exact_with_the_engine_optimizers(tmp_path, name):
    cfg = toy_config(epochs=1, checkpoint_every=4, optim={"name": name, "lr": 0.01})
    full = fit(ToyTask(custom_optim=False), toy_data(), cfg, tmp_path / "full")
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(ToyTask(custom_optim=False), toy_data(), cfg, out, hooks=[CrashAfterCheckpoint(4)])
    resumed = fit(ToyTask(custom_optim=False, init_seed=123), toy_data(), cfg, out, resume=True)
    assert curve(resumed.history) == curve(full.history)  # bit-exact, optimizer state included


def test_sigkilled_process_resumes_exactly(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = [sys.executable, str(HERE / "toy_run.py"), str(tmp_path / "run"), "--steps", "14"]
    killed = subprocess.run(script + ["--kill-at", "7"], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert latest_checkpoint(tmp_path / "run").name == "step_00000005.pt"
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 6  # steps 6 done, unsaved

    resumed = subprocess.run(script + ["--resume"], env=env, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "resuming from" in resumed.stderr.decode()

    full = fit(ToyTask(custom_optim=False), toy_data(), subprocess_config(14), tmp_path / "full")
    merged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in merged] == list(range(1, 15))
    for got, want in zip(curve(merged), curve(full.history)):
        assert got[:2] == want[:2]
        assert got[2:] == pytest.approx(want[2:], rel=1e-6, abs=1e-9)


def test_resume_continues_a_finished_run_with_more_steps(tmp_path):
    first = fit(ToyTask(), toy_data(), toy_config(steps=6), tmp_path)
    more = fit(ToyTask(), toy_data(), toy_config(steps=10), tmp_path, resume=True)
    assert first.step == 6 and more.step == 10
    assert [r["step"] for r in more.history] == list(range(1, 11))


def test_resume_without_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="nothing to resume: no checkpoint in") as e:
        fit(ToyTask(), toy_data(), toy_config(), tmp_path / "empty", resume=True)
    assert "\n" not in str(e.value)


def test_resume_with_another_architecture_names_the_mismatch(tmp_path):
    fit(ToyTask(width=16), toy_data(), toy_config(steps=4), tmp_path)
    with pytest.raises(UserError, match="another architecture") as e:
        fit(ToyTask(width=32), toy_data(), toy_config(steps=8), tmp_path, resume=True)
    msg = str(e.value)
    assert "'0.weight' is (16, 8) in the checkpoint but (32, 8) in the model" in msg
    assert "\n" not in msg
