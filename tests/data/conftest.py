"""Fixtures of the data tests: a private cache for the session, openmoji built once, tiny files."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

@pytest.fixture(scope="session")
def data_cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vlkit-data-cache")


@pytest.fixture(autouse=True)
def data_cache(data_cache_root, monkeypatch):
    """Every data test writes under one temporary VLKIT_CACHE (shared by the session, so
    datasets are built once), never the user's cache; other test folders are left alone."""
    monkeypatch.setenv("VLKIT_CACHE", str(data_cache_root))
    return data_cache_root


@pytest.fixture(scope="session")
def openmoji_all(data_cache_root):
    """The whole openmoji dataset, built once per session (its build time is printed)."""
    from vlkit import data

    old = os.environ.get("VLKIT_CACHE")
    os.environ["VLKIT_CACHE"] = str(data_cache_root)
    try:
        t0 = time.perf_counter()
        ds = data.load("openmoji", split="all")
        print(f"\nopenmoji: {len(ds)} images built and loaded in {time.perf_counter() - t0:.2f} s")
    finally:
        if old is None:
            os.environ.pop("VLKIT_CACHE", None)
        else:
            os.environ["VLKIT_CACHE"] = old
    return ds


def _write_png(path, seed: int, size: int = 12) -> np.ndarray:
    """A random RGB PNG at ``path``; returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def write_png():
    return _write_png


@pytest.fixture
def image_folder(tmp_path):
    """cats/ with 3 images, dogs/ with 2 (one with a sidecar caption file)."""
    root = tmp_path / "pets"
    for i in range(3):
        _write_png(root / "cats" / f"c{i}.png", i)
    for i in range(2):
        _write_png(root / "hot_dogs" / f"d{i}.png", 10 + i)
    (root / "hot_dogs" / "d0.txt").write_text("a dog in the sun\n\na sleepy dog\n")
    return root
