"""Shared fixtures for the adaptation tests: a tiny random CLIP, digits splits, a feature store.

Everything heavy is session-scoped (the model is never modified by a method: methods keep it
frozen and apply LoRA only inside their forward), and every cache lives in a temp directory.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("VLKIT_CACHE", tempfile.mkdtemp(prefix="vlkit-adapt-test-"))
torch.set_num_threads(1)

# A model whose vision tower has no tokens (small CNN) and a tiny open_clip text tower.
CNN_MODEL = {
    "builder": "composed", "image_size": 32, "embed_dim": 32,
    "vision": {"type": "cnn", "channels": [8, 16], "convs_per_stage": 1},
    "text": {"type": "openclip_text", "cfg": {"context_length": 32, "vocab_size": 49408, "width": 32,
                                              "heads": 2, "layers": 1}},
}


@pytest.fixture(scope="session")
def tiny_model():
    from vlkit import models

    return models.load("preset:tiny-clip")


@pytest.fixture(scope="session")
def cnn_model_spec():
    """The spec of ``cnn_model`` (tests that build a variant of it)."""
    return dict(CNN_MODEL)


@pytest.fixture(scope="session")
def cnn_model():
    from vlkit import models

    return models.load(CNN_MODEL)


@pytest.fixture(scope="session")
def digits():
    from vlkit.adapt.splits import load_split

    return {split: load_split("digits", split) for split in ("train", "val", "test")}


@pytest.fixture(scope="session")
def store(tiny_model, tmp_path_factory):
    from vlkit.adapt.features import FeatureStore

    s = FeatureStore(tiny_model, "cpu", batch_size=128)
    s.root = tmp_path_factory.mktemp("banks")
    return s


@pytest.fixture(scope="session")
def task(digits):
    """2 shots x 10 classes for training, 2 per class for validation, 100 test images."""
    from vlkit.adapt.splits import Split, fewshot, validation, whole

    test = whole(digits["test"])
    test = Split(test.dataset, test.positions[:100], test.labels[:100], test.classnames, test.templates)
    return {"train": fewshot(digits["train"], 2, 1), "val": validation(digits["val"], 2, 1), "test": test}


@pytest.fixture
def run_settings(tmp_path):
    """What training.train reads from an AdaptConfig, small."""
    from vlkit.adapt.api import AdaptConfig

    return AdaptConfig(method=["coop"], data="digits", model="preset:tiny-clip", views=2, budget=1.0,
                       device="cpu", out=str(tmp_path / "run"))
