"""Checkpoints: atomic (a crash mid-write leaves the previous one whole), loadable with
weights_only (no pickled code runs), complete (RNG streams round-trip), pruned, resumable."""

from __future__ import annotations

import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import checkpoint as ckpt
from vlkit.engine import fit, latest_checkpoint, list_checkpoints
from vlkit.errors import UserError


def test_checkpoint_loads_with_weights_only_and_holds_the_run(tmp_path):
    fit(ToyTask(), toy_data(), toy_config(steps=5, checkpoint_every=0), tmp_path)
    path = latest_checkpoint(tmp_path)
    saved = torch.load(path, weights_only=True)  # the strict loader accepts it
    assert {"model", "optimizer", "scheduler", "rng", "extra", "config", "step", "epoch",
            "batch"} <= set(saved)
    assert (saved["step"], saved["epoch"], saved["batch"]) == (5, 0, 5)  # next batch: 5 of 8
    assert saved["extra"] == {"calls": 5} and saved["config"]["checkpoint_every"] == 0


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    state = ckpt.rng_state()
    ckpt.save_checkpoint({"rng": state}, tmp_path / "r.pt")
    first = (torch.rand(3), np.random.normal(size=3), random.random(), np.random.normal())
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    again = (torch.rand(3), np.random.normal(size=3), random.random(), np.random.normal())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "step_00000002.pt"
    ckpt.save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f)
        f.seek(f.tell() // 2)
        f.truncate()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"model": {"w": torch.zeros(3)}}, path)  # over the same name
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"model": {}}, tmp_path / "checkpoints" / "step_00000004.pt")
    assert path.read_bytes() == before
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == [path.name, path.name + ".sha256"]  # no leftovers; the intact one's checksum


def test_a_run_that_crashes_while_saving_resumes_from_the_last_good_one(tmp_path, monkeypatch):
    real_save = ckpt.save_checkpoint

    def fail_at_step_6(state, path):
        if state["step"] == 6:
            raise OSError("disk full")
        return real_save(state, path)

    monkeypatch.setattr(ckpt, "save_checkpoint", fail_at_step_6)
    with pytest.raises(OSError):
        fit(ToyTask(), toy_data(), toy_config(steps=8, checkpoint_every=3, keep_last=1), tmp_path)
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt"]
    result = fit(ToyTask(), toy_data(), toy_config(steps=8, checkpoint_every=3, keep_last=1),
                 tmp_path, resume=True)
    assert result.step == 8 and [p.name for p in list_checkpoints(tmp_path)] == ["step_00000008.pt"]


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_loading_refuses_pickled_code_and_garbage(tmp_path, capsys):
    torch.save({"format": ckpt.FORMAT, "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="cannot be read"):
        ckpt.load_checkpoint(tmp_path / "evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read.*delete it"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a vlkit engine checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")


def test_tied_weights_are_stored_once_in_safetensors(tmp_path):
    m = nn.Sequential(OrderedDict(a=nn.Linear(4, 4, bias=False), b=nn.Linear(4, 4, bias=False)))
    m.b.weight = m.a.weight
    ckpt.save_safetensors(m, tmp_path / "m.safetensors")
    stored = load_file(tmp_path / "m.safetensors")
    assert list(stored) == ["a.weight"] and torch.equal(stored["a.weight"], m.a.weight)
