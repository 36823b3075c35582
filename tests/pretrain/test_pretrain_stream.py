"""`vlkit pretrain` on streamed WebDataset shards: nothing is indexed before training, each epoch
reads every sample once, and the frozen-tower caches (which need all data up front) stay off."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vlkit import pretrain
from vlkit.errors import UserError

pytest.importorskip("webdataset")

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["engine.progress=false", "engine.tensorboard=false", "engine.checkpoint_every=0"]


def shards(tmp_path, n=48, shard_size=12) -> Path:
    """``n`` coloured squares named by their colour, exported as shards (with sizes.json)."""
    import numpy as np

    from vlkit.data.dataset import ArrayImages, VLDataset
    from vlkit.data.export import export

    colors = ["red", "green", "blue"]
    images = np.zeros((n, 16, 16, 3), dtype=np.uint8)
    for i in range(n):
        images[i, :, :, i % 3] = 255
    ds = VLDataset("squares", "train", ArrayImages(images), [[f"a {colors[i % 3]} square"] for i in range(n)],
                   {}, [{} for _ in range(n)], {}, None, "squares")
    export(ds, "webdataset", tmp_path / "shards", shard_size=shard_size)
    return tmp_path / "shards"


def recipe(out: Path, name: str, *extra: str):
    return pretrain.load_config(ROOT / "configs/pretrain/shapes-clip.yaml", [
        "model=preset:tiny-clip", "objectives=[{name: clip}]", f"data.name={name}", "data.caption=first",
        "engine.batch_size=16", "engine.schedule.warmup_steps=1", "engine.log_every=1", "eval.data=null",
        f"out_dir={out}", *QUICK, *extra])


def test_pretrain_streams_pipe_shards_once_per_epoch_without_indexing(tmp_path, monkeypatch):
    from vlkit.data import stream

    folder = shards(tmp_path)

    def no_index(*args, **kwargs):
        raise AssertionError("streamed shards must not be indexed before training")

    monkeypatch.setattr("vlkit.data.webdataset.index_shard", no_index)
    read = []
    to_sample = stream.to_sample
    monkeypatch.setattr(stream, "to_sample", lambda raw: (read.append(raw["__key__"]), to_sample(raw))[1])
    cfg = recipe(tmp_path / "run", f"webdataset=pipe:cat {folder}/shards-{{000000..000003}}.tar",
                 "data.num_samples=48", "engine.steps=6")
    result = pretrain.run(cfg)
    assert result.cached == {"text": False, "image": False, "stage_views": 0}
    assert len(result.fit.history) == 6  # 48 samples / batch 16 = 3 steps an epoch, 2 epochs
    assert Counter(read) == Counter({f"{i:06d}": 2 for i in range(48)})  # each sample once per epoch
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_local_shards_with_sizes_json_stream_by_default_and_stream_false_indexes(tmp_path, monkeypatch):
    import importlib.util

    from vlkit.pretrain.streaming import wants_stream

    folder = shards(tmp_path, n=20, shard_size=10)
    local = f"webdataset={folder}/shards-{{000000..000001}}.tar"
    assert wants_stream(recipe(tmp_path / "a", local).data)  # export wrote sizes.json
    assert not wants_stream(recipe(tmp_path / "a", local, "data.stream=false").data)
    with monkeypatch.context() as m:  # without the wds extra, local shards are indexed as before
        m.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "webdataset" else object())
        assert not wants_stream(recipe(tmp_path / "a", local).data)
    (folder / "sizes.json").unlink()
    assert not wants_stream(recipe(tmp_path / "a", local).data)  # no size known: indexed as before
    assert wants_stream(recipe(tmp_path / "a", local, "data.num_samples=20").data)
    with pytest.raises(UserError, match="data.stream reads webdataset shards"):
        wants_stream(recipe(tmp_path / "a", "shapes", "data.stream=true").data)
    cfg = recipe(tmp_path / "b", f"webdataset=pipe:cat {folder}/shards-000000.tar", "engine.steps=3")
    with pytest.raises(UserError, match="num_samples=N"):
        pretrain.run(cfg)
