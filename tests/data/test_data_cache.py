"""FeatureCache: computes once, then memory hits, disk hits across instances; no pickle."""

from __future__ import annotations

import torch

from vlkit.data.cache import FeatureCache
from vlkit.data.transforms import image_transform

KEY = {"model": "m-123", "data": "d-456", "transform": "eval-64", "view": 0}


def test_computes_once_then_hits(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(5, 3)

    cache = FeatureCache(tmp_path)
    a = cache.get(KEY, compute)
    b = cache.get(dict(reversed(list(KEY.items()))), compute)  # key order does not matter
    assert len(calls) == 1 and torch.equal(a, b)
    assert cache.stats()["hits"] == 1 and cache.misses == 1
    again = FeatureCache(tmp_path)  # a new process: reads the safetensors file
    c = again.get(KEY, compute)
    assert len(calls) == 1 and again.disk_hits == 1 and torch.equal(a, c)
    other = cache.get({**KEY, "view": 1}, compute)
    assert len(calls) == 2 and other.shape == (5, 3)
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".safetensors"]  # no temp files left


def test_dict_values_and_transform_repr_key(tmp_path):
    tf = image_transform(32, (0.5,) * 3, (0.5,) * 3)
    key = {**KEY, "transform": tf}
    cache = FeatureCache(tmp_path)
    value = cache.get(key, lambda: {"image": torch.ones(2, 4), "pooled": torch.zeros(2)})
    back = FeatureCache(tmp_path).get({**KEY, "transform": repr(tf)}, lambda: {"image": torch.zeros(1)})
    assert set(back) == {"image", "pooled"} and torch.equal(back["image"], value["image"])


def test_damaged_file_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.get(KEY, lambda: torch.ones(3))
    cache.path(KEY).write_bytes(b"not safetensors")
    fresh = FeatureCache(tmp_path)
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        value = fresh.get(KEY, lambda: torch.full((3,), 2.0))
    assert fresh.misses == 1 and torch.equal(value, torch.full((3,), 2.0))


def test_lru_keeps_memory_bounded(tmp_path):
    cache = FeatureCache(tmp_path, max_items=2)
    for v in range(3):
        cache.get({**KEY, "view": v}, lambda: torch.zeros(4))
    assert cache.stats()["in_memory"] == 2
    cache.get({**KEY, "view": 0}, lambda: torch.zeros(4))  # evicted from memory, still on disk
    assert cache.disk_hits == 1 and cache.misses == 3
