"""The dataset cache: manifests are checked, damage is rebuilt, nothing half-written survives."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vlkit import data
from vlkit.data import store


def _builder(calls):
    def build():
        calls.append(1)
        images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
        return images, [{"i": 0}, {"i": 1}], {"note": "tiny"}
    return build


def test_cached_build_builds_once_then_reads(data_cache):
    calls = []
    a = store.cached_build("tiny", {"k": 1}, _builder(calls))
    store._MEMO.clear()  # a new process: read and check the files again
    b = store.cached_build("tiny", {"k": 1}, _builder(calls))
    assert len(calls) == 1 and np.array_equal(a.images, b.images) and a.content_id == b.content_id
    store.cached_build("tiny", {"k": 2}, _builder(calls))  # other options, other build
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["flip_byte", "delete"])
def test_damaged_cache_is_rebuilt(data_cache, damage):
    first = data.load("digits", split="test")
    folder = next((data_cache / "data" / "digits").glob("*/manifest.json")).parent
    target = folder / store.IMAGES
    if damage == "flip_byte":
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    else:
        target.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = data.load("digits", split="test")
    if damage == "flip_byte":
        assert any("damaged" in str(w.message) and "rebuilding" in str(w.message) for w in caught)
    assert np.array_equal(np.asarray(first[5].image), np.asarray(again[5].image))
    assert first.fingerprint() == again.fingerprint()
    assert store._read(folder) is not None  # the rebuilt files pass their check
    assert not list(folder.glob(".*tmp")) and not list(folder.glob(".images.*"))
