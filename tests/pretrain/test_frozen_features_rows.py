"""Frozen-tower feature tables ask the cache for exactly their row count (``rows=``): a cached
table with another number of rows is recomputed, never looked up by a row index it lacks."""

from __future__ import annotations

import pytest
import torch

from vlkit.data.cache import FeatureCache, canonical_key, write_tensors
from vlkit.pretrain.features import FrozenTextFeatures


class PooledText:
    """A stub text tower: row i of a batch is (len(text), 1)."""

    def __init__(self):
        self.calls = 0

    def fingerprint(self, part=None):
        return f"stub-{part}"

    def encode_text_pooled(self, texts):
        self.calls += 1
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


def test_frozen_text_table_with_wrong_rows_is_recomputed(tmp_path):
    model, captions = PooledText(), ["a", "bb", "a", "cccc"]  # 3 distinct
    key = {"model": "stub-text", "data": "d1", "transform": "captions", "view": 0, "n": 3}
    cache = FeatureCache(tmp_path)
    write_tensors(cache.path(key), {"__tensor__": torch.zeros(2, 2)}, canonical_key(key))  # valid file, 2 rows
    with pytest.warns(UserWarning, match="holds 2 rows where 3 were asked for"):
        table = FrozenTextFeatures(model, captions, "d1", cache=cache)
    assert model.calls == 1 and cache.misses == 1
    assert table.lookup(["cccc", "a"]).tolist() == [[4.0, 1.0], [1.0, 1.0]]
    again = FrozenTextFeatures(model, captions, "d1", cache=FeatureCache(tmp_path))  # now stored right
    assert model.calls == 1 and torch.equal(again.features, table.features)
