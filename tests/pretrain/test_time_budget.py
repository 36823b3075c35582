"""A time budget that stops training says so (issue 17): one warning line with the steps done
and planned and the override that lifts it, a ``training`` block in metrics.json, a warning at
the top of report.html; ``--resume`` continues and says the same when stopped again.

The budget's clock is replaced by one that moves one second per reading, so the step the
budget stops at is known exactly (the fake clock is read once at the start and once per step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from vlkit import pretrain
from vlkit.pretrain import task as pretrain_task

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model=preset:tiny-clip", "data.name=shapes", "data.max_samples=16", "data.caption=first",
        "data.augment=false", "objectives=[{name: clip}]", "engine.batch_size=8", "engine.schedule.warmup_steps=0",
        "engine.progress=false", "engine.tensorboard=false", "engine.checkpoint_every=0"]


@pytest.fixture
def one_second_per_reading(monkeypatch):
    ticks = iter(range(1, 10_000))
    monkeypatch.setattr(pretrain_task, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))


def _cfg(out: Path, *extra: str):
    return pretrain.load_config(ROOT / "configs/pretrain/shapes-clip.yaml", [*TINY, f"out_dir={out}", *extra])


def test_a_budget_that_stops_training_warns_records_and_reports_it_and_resume_says_it_again(
        tmp_path, one_second_per_reading):
    out = tmp_path / "run"
    # start reads 1; step k reads 1 + k: elapsed k >= 3.5 first at step 4
    cfg = _cfg(out, "engine.steps=40", "time_budget_s=3.5", "eval.data=null")
    with pytest.warns(UserWarning, match=r"^vlkit: the time budget stopped training at step 4 of 40 ") as got:
        result = pretrain.run(cfg)
    text = str(got[0].message)
    assert "time_budget_s=null" in text and "--resume" in text and "\n" not in text
    assert result.fit.step == 4 and result.fit.steps_planned == 40
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert {k: training[k] for k in ("steps_done", "steps_planned", "stopped_by_budget", "time_budget_s")} == \
        {"steps_done": 4, "steps_planned": 40, "stopped_by_budget": True, "time_budget_s": 3.5}
    page = (out / "report.html").read_text()
    assert 'id="training-warning"' in page and "step 4 of 40" in page
    assert "4 of 40 planned steps; time budget 3.5 s (stopped training early; lift it with time_budget_s=null)" in page

    # resumed: the budget counts again from the restart (a new reading of 1 + 4 + ...), four more steps
    with pytest.warns(UserWarning, match=r"stopped training at step 8 of 40 "):
        again = pretrain.run(cfg, resume=True)
    assert again.fit.step == 8
    assert json.loads((out / "metrics.json").read_text())["training"]["steps_done"] == 8


def test_a_budget_not_reached_is_silent_and_the_report_says_so(tmp_path, one_second_per_reading, recwarn):
    out = tmp_path / "run"
    pretrain.run(_cfg(out, "engine.steps=3", "time_budget_s=100", "eval.data=null"))
    assert not [w for w in recwarn if "time budget" in str(w.message)]
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert (training["steps_done"], training["stopped_by_budget"]) == (3, False) and "warning" not in training
    page = (out / "report.html").read_text()
    assert "3 of 3 planned steps; time budget 100 s (not reached)" in page and "training-warning" not in page


def test_the_cli_prints_the_budget_stop_as_one_warning_line(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-m", "vlkit.cli", "pretrain", "configs/pretrain/shapes-clip.yaml", *TINY,
                           "engine.steps=100000", "time_budget_s=0.3", "eval.data=null", f"out_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, timeout=600)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-2000:]
    lines = [line for line in err.splitlines() if "time budget" in line]
    assert len(lines) == 1 and lines[0].startswith("vlkit: warning: the time budget stopped training at step ")
    assert "of 100000 (time_budget_s=0.3" in lines[0] and "time_budget_s=null" in lines[0]
    assert "warnings.warn" not in err and "UserWarning" not in err
    assert " of 100000 steps " in proc.stdout.decode()
