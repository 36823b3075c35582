"""FeatureCache: computes once, then memory hits, disk hits across instances; no pickle;
every file checked (sha256, shapes, rows asked for, finite) and recomputed when it fails."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

from vlkit.data import cache as cache_module
from vlkit.data.cache import FeatureCache, canonical_key, write_tensors
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


# -- integrity: a cache file is checked (sha256, shape, rows asked for, finite) before use -------


def _get_recording(cache, key, compute, **kw):
    """(value, warning messages) of one ``cache.get``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = cache.get(key, compute, **kw)
    return value, [str(w.message) for w in caught]


def _one_line_naming(messages, path, *words):
    assert len(messages) == 1, messages
    assert "\n" not in messages[0] and str(path) in messages[0], messages[0]
    for w in words:
        assert w in messages[0], messages[0]


def test_flipped_bytes_are_recomputed_not_returned(tmp_path):
    truth = torch.arange(12, dtype=torch.float32).reshape(4, 3) + 1
    FeatureCache(tmp_path).get(KEY, lambda: truth.clone())
    path = FeatureCache(tmp_path).path(KEY)
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01  # one mantissa bit of the last value: still a finite, plausible number
    path.write_bytes(bytes(raw))
    calls = []
    value, messages = _get_recording(FeatureCache(tmp_path), KEY, lambda: calls.append(1) or truth.clone())
    assert calls == [1] and torch.equal(value, truth)
    _one_line_naming(messages, path, "sha256")
    again, messages = _get_recording(FeatureCache(tmp_path), KEY, lambda: calls.append(1) or truth.clone())
    assert calls == [1] and torch.equal(again, truth) and messages == []  # rewritten good, read from disk


def test_entry_with_the_wrong_row_count_is_recomputed_not_a_crash(tmp_path):
    FeatureCache(tmp_path).get(KEY, lambda: torch.zeros(3, 2))  # a valid file, but 3 rows
    path = FeatureCache(tmp_path).path(KEY)
    fresh = FeatureCache(tmp_path)  # a later run that asks for 5 items
    value, messages = _get_recording(fresh, KEY, lambda: torch.ones(5, 2), rows=5)
    assert value.shape == (5, 2) and fresh.misses == 1
    _one_line_naming(messages, path, "3 rows", "5")
    later = FeatureCache(tmp_path)
    value, messages = _get_recording(later, KEY, lambda: torch.full((5, 2), 9.0), rows=5)
    assert later.disk_hits == 1 and torch.equal(value, torch.ones(5, 2)) and messages == []
    same_process, _ = _get_recording(later, KEY, lambda: torch.ones(4, 2), rows=4)  # memory checks too
    assert same_process.shape == (4, 2)


def test_dict_entries_check_rows_of_every_tensor(tmp_path):
    FeatureCache(tmp_path).get(KEY, lambda: {"image": torch.zeros(3, 2), "pooled": torch.zeros(2)})
    value, messages = _get_recording(FeatureCache(tmp_path), KEY,
                                     lambda: {"image": torch.zeros(3, 2), "pooled": torch.zeros(3)}, rows=3)
    assert value["pooled"].shape == (3,)
    _one_line_naming(messages, FeatureCache(tmp_path).path(KEY), "2 rows in pooled")


def test_nan_rows_are_neither_read_nor_stored(tmp_path):
    cache = FeatureCache(tmp_path)
    path = cache.path(KEY)
    bad = torch.ones(4, 2)
    bad[2] = float("nan")
    write_tensors(path, {"__tensor__": bad}, canonical_key(KEY))  # checksum valid, values not
    value, messages = _get_recording(cache, KEY, lambda: torch.ones(4, 2))
    assert torch.equal(value, torch.ones(4, 2))
    _one_line_naming(messages, path, "NaN")
    other = {**KEY, "view": 7}
    value, messages = _get_recording(FeatureCache(tmp_path), other, lambda: bad.clone())
    assert torch.isnan(value).any()  # handed back as computed, for the caller to refuse
    assert not FeatureCache(tmp_path).path(other).exists()  # ... but never stored
    _one_line_naming(messages, FeatureCache(tmp_path).path(other), "NaN", "not caching")


def test_entries_without_checksum_are_recomputed_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_legacy_warned", False)
    cache = FeatureCache(tmp_path)
    for view in (0, 1):  # two entries as an older vlkit wrote them: key only, no checksums
        key = {**KEY, "view": view}
        save_file({"__tensor__": torch.zeros(2, 2)}, str(cache.path(key)), metadata={"key": canonical_key(key)})
    messages = []
    for view in (0, 1):
        value, got = _get_recording(cache, {**KEY, "view": view}, lambda: torch.ones(2, 2))
        assert torch.equal(value, torch.ones(2, 2))
        messages += got
    assert len(messages) == 1 and "before checksums" in messages[0]  # one line for all of them
    again = FeatureCache(tmp_path)
    value, got = _get_recording(again, KEY, lambda: torch.full((2, 2), 5.0))
    assert again.disk_hits == 1 and torch.equal(value, torch.ones(2, 2)) and got == []


@pytest.mark.parametrize("damage", ["truncate", "foreign key", "garbage"])
def test_any_damaged_file_is_one_warning_and_a_recompute(tmp_path, damage):
    FeatureCache(tmp_path).get(KEY, lambda: torch.ones(8, 4))
    path = FeatureCache(tmp_path).path(KEY)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "foreign key":
        write_tensors(path, {"__tensor__": torch.zeros(8, 4)}, canonical_key({**KEY, "view": 3}))
    else:
        path.write_bytes(b"\x00" * 64)
    value, messages = _get_recording(FeatureCache(tmp_path), KEY, lambda: torch.full((8, 4), 2.0))
    assert torch.equal(value, torch.full((8, 4), 2.0))
    _one_line_naming(messages, path)
