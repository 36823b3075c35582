"""DDP on CPU (gloo): two processes with half the batch each train exactly like one process with
the whole batch; only rank 0 writes; asking for DDP without torchrun is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ddp_toy
from torchrun_launch import launch_like_torchrun
from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import fit, load_checkpoint
from vlkit.engine.logger import read_metrics
from vlkit.errors import UserError

HERE = Path(__file__).parent


def test_two_process_ddp_equals_one_process_with_the_global_batch(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    launch_like_torchrun([str(HERE / "ddp_toy.py"), str(out)], nproc=2)
    saved = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    ranks = [r["first"] for r in saved]

    single = ddp_toy.run(str(tmp_path / "single"))
    # Each rank saw its own half of every global batch; together, what one process saw.
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(single["seen"])
    for rank in ranks:
        assert rank["losses"] == pytest.approx(single["losses"], rel=1e-6)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-5, atol=1e-6)
        for name, param in single["params"].items():
            torch.testing.assert_close(rank["params"][name], param, rtol=1e-5, atol=1e-6)

    # Only rank 0 wrote: one metrics line per step (two writers would append twice).
    assert [r["step"] for r in read_metrics(out / "a" / "metrics.jsonl")] == [1, 2, 3, 4]
    last = load_checkpoint(out / "a" / "checkpoints" / "step_00000004.pt")
    assert last["world_size"] == 2 and len(last["rng"]) == 2  # each rank's RNG streams

    # Resumed from step 2, each rank drew its own random numbers again and ended the same.
    assert ranks[0]["draws"] != ranks[1]["draws"]
    for rank in saved:
        assert rank["resumed"]["draws"] == rank["first"]["draws"][2:]
        for name, param in rank["first"]["params"].items():
            assert torch.equal(rank["resumed"]["params"][name], param)


def test_distributed_without_torchrun_is_one_clear_error(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match=r"run it with torchrun --nproc_per_node N") as e:
        fit(ToyTask(), toy_data(), toy_config(distributed=True), tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_global_batch_must_split_evenly_over_ranks():
    data = toy_data(batch_size=9)
    data._rank, data._world = 0, 2
    with pytest.raises(UserError, match="does not divide among 2 processes"):
        next(data.batches(0))
