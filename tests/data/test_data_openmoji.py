"""openmoji: what the build renders, how concepts and splits are formed, cache integrity."""

from __future__ import annotations

import json

import numpy as np

from vlkit import data
from vlkit.data import openmoji
from vlkit.paths import cache_dir


def test_every_fully_qualified_emoji_is_rendered_or_reported(openmoji_all):
    entries = openmoji.parse_emoji_test(openmoji.emoji_test_path())
    manifest = next(cache_dir("data", "openmoji").glob("*/manifest.json"))
    info = json.loads(manifest.read_text())["info"]
    assert len(openmoji_all) + len(info["skipped"]) == len(entries) > 3000
    assert len(set(openmoji_all.labels_of("subgroup"))) == 98
    assert len(set(openmoji_all.labels_of("group"))) == 9
    img = np.asarray(openmoji_all[0].image)
    assert img.shape == (64, 64, 3) and (img < 200).any(), "first emoji is blank"


def test_skin_tone_variants_share_their_base_concept(openmoji_all):
    meta = [openmoji_all.meta_at(i) for i in range(len(openmoji_all))]
    by_name = {m["name"]: m for m in meta}
    assert by_name["waving hand: light skin tone"]["concept"] == "waving hand"
    assert by_name["handshake: light skin tone, dark skin tone"]["concept"] == "handshake"
    # hair variants are concepts of their own
    assert by_name["man: red hair"]["concept_id"] != by_name["man"]["concept_id"]
    concept = openmoji_all.labels_of("concept")
    idx = {m["codepoints"]: i for i, m in enumerate(meta)}
    for i, m in enumerate(meta):
        if m["skin_tone"]:
            base = idx[m["concept_id"]]
            assert not meta[base]["skin_tone"], m["name"]
            assert concept[i] == concept[base], m["name"]


def test_splits_are_disjoint_by_concept_and_cover_everything(openmoji_all):
    parts = {s: data.load("openmoji", split=s) for s in ("train", "val", "test")}
    concepts = {s: {d.meta_at(i)["concept_id"] for i in range(len(d))} for s, d in parts.items()}
    assert not concepts["train"] & concepts["val"]
    assert not concepts["train"] & concepts["test"]
    assert not concepts["val"] & concepts["test"]
    assert sum(len(d) for d in parts.values()) == len(openmoji_all)
    n = sum(len(c) for c in concepts.values())
    assert 0.65 < len(concepts["train"]) / n < 0.75
    # the concept view names exactly the split's concepts; labels index into it
    test = parts["test"]
    assert len(test.classnames) == len(concepts["test"]) and test.targets.max() == len(test.classnames) - 1


def test_split_is_fixed_by_the_seed(openmoji_all):
    a = data.load("openmoji", split="test", seed=0)
    b = data.load("openmoji", split="test", seed=0)
    c = data.load("openmoji", split="test", seed=1)
    ids = lambda d: [d.meta_at(i)["codepoints"] for i in range(len(d))]  # noqa: E731
    assert ids(a) == ids(b) and a.fingerprint() == b.fingerprint()
    assert np.array_equal(np.asarray(a[3].image), np.asarray(b[3].image))
    assert set(ids(a)) != set(ids(c)) and a.fingerprint() != c.fingerprint()


def test_captions_and_views(openmoji_all):
    ds = data.load("openmoji:subgroup", split="train")
    i = next(i for i in range(len(ds)) if ds.meta_at(i)["aliases"])
    sample = ds[i]
    assert sample.captions[0] == sample.meta["name"].replace(": ", ", ")
    assert set(sample.meta["aliases"]) <= set(sample.captions)
    assert f"an emoji of {sample.captions[0]}" in sample.captions
    assert sample.label == sample.labels["subgroup"]
    assert len(ds.classnames) == 98 and "mammal" in ds.classnames
    assert all("{}" in t for t in ds.templates)
    assert data.load("openmoji:group", split="val").classnames[0] == "smileys and emotion"


def test_aliases_are_cleaned():
    assert "heart" in openmoji.aliases("\u2764\ufe0f", "red heart")
    assert all(":" not in a and "_" not in a for a in openmoji.aliases("\U0001F600", "grinning face"))


def test_flag_names_read_as_words():
    assert openmoji.readable("flag: France", {"flag: ": "flag of "}) == "flag of France"
