"""The shared feature cache: frozen image features are encoded once, whatever the epochs,
seeds or methods, and a new process finds them on disk."""

from __future__ import annotations

import numpy as np

from vlkit import adapt
from vlkit.adapt.features import FeatureStore, text_classifier
from vlkit.adapt.splits import fewshot
from vlkit.adapt.training import predict, train


def _count_calls(monkeypatch, model) -> list[int]:
    calls = [0]
    original = model.encode_image

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode_image", counted)
    return calls


def test_image_features_are_encoded_once_across_epochs_seeds_and_methods(
        tiny_model, digits, task, run_settings, monkeypatch, tmp_path):
    calls = _count_calls(monkeypatch, tiny_model)
    store = FeatureStore(tiny_model, "cpu", batch_size=64)
    store.root = tmp_path / "banks"
    store.root.mkdir()
    s1, s2 = fewshot(digits["train"], 2, 1), fewshot(digits["train"], 2, 2)
    classes, templates = s1.classnames, s1.templates

    coop = adapt.build_method("coop", tiny_model, classes, templates, {"epochs": 4, "n_ctx": 2})
    train(coop, s1, None, store, run_settings, 2, 1, tmp_path / "coop1")
    assert store.encoded == run_settings.views * len(s1)  # 2 views x 20 images, not x 4 epochs
    assert calls[0] == run_settings.views  # one batch per view: 20 images < 64

    kg = adapt.build_method("kgcoop", tiny_model, classes, templates, {"epochs": 3})
    train(kg, s1, None, store, run_settings, 2, 1, tmp_path / "kg1")  # another method, same seed
    assert store.encoded == run_settings.views * len(s1)

    train(coop, s2, None, store, run_settings, 2, 2, tmp_path / "coop2")  # another seed
    union = np.union1d(s1.positions, s2.positions)
    assert store.encoded == run_settings.views * len(union)  # only images seed 1 did not have

    before = store.encoded
    predict(coop, task["test"], store)
    predict(kg, task["test"], store)  # test features cached for repeated evaluation
    assert store.encoded == before + len(task["test"])

    fresh = FeatureStore(tiny_model, "cpu", batch_size=64)  # a new process: memory empty
    fresh.root = store.root
    n_calls = calls[0]
    coop_tf = fresh.train_transform([0.08, 1.0], hflip=False)  # CoOp's crops; digits are not flip-safe
    views = fresh.view_features(digits["train"], union, run_settings.views, coop_tf)
    assert fresh.encoded == 0 and calls[0] == n_calls
    assert views.shape == (run_settings.views, len(union), tiny_model.embed_dim)


def test_views_differ_and_are_reproducible(tiny_model, digits, store):
    pos = np.arange(6)
    views = store.view_features(digits["train"], pos, 2)
    assert not (views[0] == views[1]).all()  # two different augmentations
    again = FeatureStore(tiny_model, "cpu")
    again.root = store.root / "elsewhere"
    again.root.mkdir(exist_ok=True)
    assert (again.view_features(digits["train"], pos, 2) == views).all()  # seeded per (view, image)


def test_text_weights_are_computed_once(tiny_model, monkeypatch):
    calls = _count_calls_text(monkeypatch, tiny_model)
    w1 = text_classifier(tiny_model, ["zero", "one"], ["a {}", "the number {}"])
    w2 = text_classifier(tiny_model, ["zero", "one"], ["a {}", "the number {}"])
    assert calls[0] == 1 and (w1 == w2).all() and w1.shape == (2, tiny_model.embed_dim)


def _count_calls_text(monkeypatch, model) -> list[int]:
    calls = [0]
    original = model.encode_text

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode_text", counted)
    return calls
