"""Checkpoint integrity (issue 16, items 5, 7 and 8): a sha256 sidecar verified on resume, a
damaged newest checkpoint falls back to the previous one, temp files of a write killed midway
(a real process, SIGKILLed inside ``torch.save``) are removed at the next start, and a full disk
is one line that keeps the previous checkpoint."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import checkpoint as ckpt
from vlkit.engine import fit
from vlkit.engine.logger import read_metrics
from vlkit.errors import UserError

HERE = Path(__file__).parent


def _toy_run(out, steps=6, every=2, keep_last=3):
    return fit(ToyTask(), toy_data(), toy_config(steps=steps, checkpoint_every=every, keep_last=keep_last), out)




def _flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_each_checkpoint_has_a_checksum_that_sha256sum_accepts(tmp_path):
    _toy_run(tmp_path)
    found = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]
    for p in found:
        assert ckpt.verify_checkpoint(p) is None
    check = subprocess.run(["sha256sum", "-c", "step_00000006.pt.sha256"], cwd=found[-1].parent,
                           capture_output=True)
    assert check.returncode == 0 and b"OK" in check.stdout
    _flip_byte(found[-1])
    assert "bytes changed" in ckpt.verify_checkpoint(found[-1])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    _toy_run(tmp_path, steps=6)
    newest = ckpt.latest_checkpoint(tmp_path)
    if damage == "flip":
        _flip_byte(newest)
    else:
        newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"checkpoint .*step_00000006.pt is damaged: .*resuming from the previous"):
        resumed = fit(ToyTask(), toy_data(), toy_config(steps=8, checkpoint_every=2, keep_last=3), tmp_path,
                      resume=True)
    assert [r["step"] for r in resumed.history][:1] == [1] and resumed.step == 8
    assert (tmp_path / "checkpoints" / "step_00000006.pt.damaged").is_file()  # kept, out of the way
    # the run went on from step 4: its steps 5-8 were trained again, the log has each step once
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 8


def test_a_damaged_checkpoint_named_by_path_is_one_line(tmp_path):
    _toy_run(tmp_path, steps=4)
    path = ckpt.latest_checkpoint(tmp_path)
    _flip_byte(path)
    with pytest.raises(UserError, match=r"step_00000004.pt is damaged: its bytes changed") as e:
        fit(ToyTask(), toy_data(), toy_config(steps=6), tmp_path, resume=str(path))
    assert "\n" not in str(e.value)


def test_every_checkpoint_damaged_is_one_line(tmp_path):
    _toy_run(tmp_path, steps=4)
    for p in ckpt.list_checkpoints(tmp_path):
        _flip_byte(p)
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no intact checkpoint in .*2 damaged"):
        fit(ToyTask(), toy_data(), toy_config(steps=6), tmp_path, resume=True)


_KILL_IN_WRITE = """
import os, signal, sys, torch
sys.path.insert(0, sys.argv[2])
from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import fit
real_save, calls = torch.save, []
def save_then_die(obj, f, *a, **k):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint: half its bytes, then SIGKILL
        real_save(obj, f); f.flush(); f.seek(f.tell() // 2); f.truncate(); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, f, *a, **k)
torch.save = save_then_die
fit(ToyTask(), toy_data(), toy_config(steps=8, checkpoint_every=2, keep_last=0), sys.argv[1])
"""


def test_temp_files_of_a_write_killed_midway_are_removed_when_the_run_resumes(tmp_path, capsys):
    killed = subprocess.run([sys.executable, "-c", _KILL_IN_WRITE, str(tmp_path), str(HERE)],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == [".step_00000004.pt.tmp-%d" % _pid_of(left), "step_00000002.pt", "step_00000002.pt.sha256"]
    resumed = fit(ToyTask(), toy_data(), toy_config(steps=8, checkpoint_every=2, keep_last=0), tmp_path,
                  resume=True)
    assert resumed.step == 8
    assert "removed 1 temporary file(s) left by a killed write" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)][:2] == ["step_00000002.pt", "step_00000004.pt"]


def _pid_of(names: list[str]) -> int:
    return int(next(n for n in names if ".tmp-" in n).rsplit("-", 1)[1])


def test_temp_files_of_live_writers_are_left_alone(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = tmp_path / f".report.html.tmp-{live.pid}"
        dead = tmp_path / ".report.html.tmp-999999999"
        (tmp_path / "model").mkdir()
        dead_model = tmp_path / "model" / ".config.json.tmp-999999998"  # a final model save cut short
        for p in (mine, dead, dead_model):
            p.write_text("half a file")
        assert sorted(ckpt.clean_temp_files(tmp_path)) == sorted([dead, dead_model])
        assert mine.exists()
    finally:
        live.kill()
        live.wait()


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def full_at_the_second(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"x" * 1000)  # some bytes got out before the disk filled
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_at_the_second)
    with pytest.raises(UserError, match=r"disk full: could not write checkpoint .*step_00000004.pt "
                                        r"\(needs about [\d.]+ KB, .* free\); the previous file is kept") as e:
        fit(ToyTask(), toy_data(), toy_config(steps=8, checkpoint_every=2), tmp_path)
    assert "\n" not in str(e.value)
    size = (tmp_path / "checkpoints" / "step_00000002.pt").stat().st_size
    assert f"needs about {size / 1024:.1f} KB" in str(e.value)  # the size of a checkpoint of this run
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002.pt"]
    assert ckpt.verify_checkpoint(ckpt.latest_checkpoint(tmp_path)) is None
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name]