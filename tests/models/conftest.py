"""Fixtures for the model tests: one thread, a private cache, models built once per session."""

from __future__ import annotations

import os

import pytest
import torch

_TINY_OPENCLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread_private_cache(tmp_path_factory):
    """Per test module (so other test folders are untouched): one thread, a private VLKIT_CACHE."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    old = os.environ.get("VLKIT_CACHE")
    os.environ["VLKIT_CACHE"] = str(tmp_path_factory.mktemp("vlkit-cache"))
    yield
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("VLKIT_CACHE", None)
    else:
        os.environ["VLKIT_CACHE"] = old


@pytest.fixture(scope="session")
def moji():
    """moji-lit-s, loaded with HF_HUB_OFFLINE=1 to prove it needs no network (MiniLM ~2 s)."""
    import vlkit.models as M

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return M.load("preset:moji-lit-s")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@pytest.fixture
def tiny_cfg() -> dict:
    """A tiny open_clip model config (CLIP class kwargs), a fresh copy per test."""
    import copy

    return copy.deepcopy(_TINY_OPENCLIP)


@pytest.fixture(scope="session")
def tiny():
    import vlkit.models as M

    return M.load("preset:tiny-clip")

