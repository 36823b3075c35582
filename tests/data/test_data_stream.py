"""Streamed WebDataset shards (vlkit.data.stream): brace patterns and pipe: URLs through the
webdataset library, shards split across ranks (RANK/WORLD_SIZE, what torchrun sets and what
webdataset.split_by_node reads) and DataLoader workers, exactly once per epoch; resampling;
resume without decoding; one clean line for a missing or garbled URL."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import pytest
from PIL import Image

pytest.importorskip("webdataset")

from vlkit.data.collate import Collate  # noqa: E402
from vlkit.data.stream import WebDatasetStream, shard_urls  # noqa: E402
from vlkit.errors import UserError  # noqa: E402

N_SHARDS, PER_SHARD = 4, 3


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png(v: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (v, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path):
    """shard-0.tar .. shard-3.tar, 3 samples each, keys s{shard}_{i}; caption = key."""
    for s in range(N_SHARDS):
        with tarfile.open(tmp_path / f"shard-{s}.tar", "w") as tar:
            for i in range(PER_SHARD):
                key = f"s{s}_{i}"
                _add(tar, f"{key}.png", png(10 * s + i))
                _add(tar, f"{key}.txt", key.encode())
    return tmp_path


ALL_KEYS = {f"s{s}_{i}" for s in range(N_SHARDS) for i in range(PER_SHARD)}


def keys_of(stream, epoch, start=0) -> list[str]:
    return [t for b in stream.batches(epoch, start) for t in b["texts"]]


def rank_env(monkeypatch, rank, world):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


def make(shards, **kw):
    kw.setdefault("num_samples", N_SHARDS * PER_SHARD)
    return WebDatasetStream(f"pipe:cat {shards}/shard-{{0..3}}.tar", kw.pop("batch_size", 2),
                            Collate(None, caption="first"), seed=3, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_see_each_sample_exactly_once_per_epoch(shards, monkeypatch, workers):
    stream = make(shards, num_workers=workers)
    assert stream.urls == [f"pipe:cat {shards}/shard-{s}.tar" for s in range(N_SHARDS)]
    assert len(stream) == 6  # 12 samples / global batch 2
    epochs = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            rank_env(monkeypatch, rank, 2)
            got = keys_of(stream, epoch)
            assert len(got) == 6  # local batch 1 x 6 batches: this rank's two shards
            seen += got
        assert Counter(seen) == Counter(ALL_KEYS)  # every sample once across the ranks
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # shards and samples reshuffled per epoch, same set


def test_an_epoch_is_a_function_of_seed_and_epoch_and_resume_skips_exactly(shards, monkeypatch):
    rank_env(monkeypatch, 0, 1)
    stream = make(shards, batch_size=3, shuffle_buffer=4)
    first = keys_of(stream, 2)
    assert sorted(first) == sorted(ALL_KEYS)
    assert keys_of(stream, 2) == first
    assert keys_of(stream, 2, start=2) == first[6:]  # batches 2.. of the same epoch


def test_resampled_draws_num_samples_from_the_shards(shards, monkeypatch):
    rank_env(monkeypatch, 0, 1)
    stream = make(shards, resampled=True, num_samples=20)
    got = keys_of(stream, 0)
    assert len(got) == 20 and set(got) <= ALL_KEYS
    assert max(Counter(got).values()) > 1  # with replacement: 20 draws of 12 samples repeat some
    assert keys_of(stream, 0) == got and keys_of(stream, 1) != got


def test_size_from_sizes_json_and_brace_ranges(shards, monkeypatch):
    (shards / "sizes.json").write_text(json.dumps({f"shard-{s}.tar": PER_SHARD for s in range(N_SHARDS)}))
    rank_env(monkeypatch, 0, 1)
    stream = WebDatasetStream(f"{shards}/shard-{{0..2}}.tar", 3, Collate(None, caption="first"))
    assert stream.num_samples == 9 and len(stream) == 3
    assert sorted(keys_of(stream, 0)) == sorted(k for k in ALL_KEYS if not k.startswith("s3"))


def test_missing_and_garbled_urls_are_one_line(shards, monkeypatch):
    rank_env(monkeypatch, 0, 1)
    for pattern, message in [
        (f"{shards}/shard-{{0..7}}.tar", "webdataset shard not found: .*shard-4.tar"),
        ("htps://example.com/a-{000..002}.tar", "unknown scheme 'htps'"),
        ("pipe:", "no command after 'pipe:'"),
    ]:
        with pytest.raises(UserError, match=message) as e:
            shard_urls(pattern)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="num_samples") as e:
        WebDatasetStream(f"{shards}/shard-0.tar", 1, Collate(None))
    for workers in (0, 2):  # a pipe whose command fails, read in the main process or a worker
        stream = WebDatasetStream(f"pipe:cat {shards}/missing-{{0..1}}.tar", 1, Collate(None), num_samples=4,
                                  num_workers=workers)
        with pytest.raises(UserError, match="cannot read webdataset shard") as e:
            list(stream.batches(0))
        assert "\n" not in str(e.value) and "missing-" in str(e.value)
    (shards / "garbled.tar").write_bytes(b"this is not a tar archive" * 40)
    stream = WebDatasetStream(f"{shards}/garbled.tar", 1, Collate(None), num_samples=2)
    with pytest.raises(UserError, match="garbled.tar") as e:
        list(stream.batches(0))
    assert "\n" not in str(e.value)


def test_too_few_shards_for_ranks_and_workers_is_refused(shards, monkeypatch):
    rank_env(monkeypatch, 0, 2)
    stream = WebDatasetStream(f"{shards}/shard-{{0..2}}.tar", 2, Collate(None), num_samples=6, num_workers=2)
    with pytest.raises(UserError, match="3 shards cannot be split among 2 rank"):
        list(stream.batches(0))


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from vlkit.data.collate import Collate
from vlkit.data.stream import WebDatasetStream
dist.init_process_group("gloo")  # as under DDP: the library sees the rank through RANK/WORLD_SIZE
stream = WebDatasetStream(sys.argv[1], 2, Collate(None, caption="first"), num_samples=12, seed=5)
keys = [t for epoch in (0, 1) for b in stream.batches(epoch) for t in b["texts"]]
print("KEYS", json.dumps({"rank": dist.get_rank(), "keys": keys}))
dist.destroy_process_group()
"""


def test_two_torchrun_processes_split_the_shards_exactly(shards):
    from torchrun_launch import launch_like_torchrun

    outputs = launch_like_torchrun(["-c", RANK_SCRIPT, f"pipe:cat {shards}/shard-{{0..3}}.tar"], nproc=2, timeout=120)
    runs = [json.loads(line.split("KEYS ", 1)[1]) for out in outputs for line in out.splitlines() if "KEYS " in line]
    assert sorted(r["rank"] for r in runs) == [0, 1]
    for epoch in (0, 1):
        seen = [k for r in runs for k in r["keys"][6 * epoch: 6 * (epoch + 1)]]
        assert Counter(seen) == Counter(ALL_KEYS)  # each sample once per epoch across the 2 processes
