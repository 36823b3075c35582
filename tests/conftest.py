"""Shared test set-up: a private vlkit cache per test session, and quiet, small thread counts."""

from __future__ import annotations

import os
import tempfile

import pytest

# Set before vlkit is imported anywhere, so every module sees the test cache.
_CACHE = tempfile.mkdtemp(prefix="vlkit-test-cache-")
os.environ["VLKIT_CACHE"] = _CACHE  # never the user's real cache
os.environ.setdefault("HF_HUB_OFFLINE", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return os.environ["VLKIT_CACHE"]
