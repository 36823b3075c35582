"""digits: all 1,797 real digits, a stratified split fixed by the seed, captions with names."""

from __future__ import annotations

import numpy as np

from vlkit import data


def test_split_is_stratified_disjoint_and_complete():
    parts = {s: data.load("digits", split=s) for s in ("train", "val", "test")}
    src = {s: {d.meta_at(i)["source_index"] for i in range(len(d))} for s, d in parts.items()}
    assert sum(map(len, src.values())) == len(set().union(*src.values())) == 1797
    for d in parts.values():
        counts = np.bincount(d.targets, minlength=10)
        assert counts.min() > 0 and counts.max() - counts.min() <= max(3, 0.1 * counts.mean())


def test_seed_fixes_the_split():
    a, b, c = (data.load("digits", split="test", seed=s) for s in (0, 0, 3))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert [a.meta_at(i)["source_index"] for i in range(20)] != [c.meta_at(i)["source_index"] for i in range(20)]


def test_images_and_captions():
    ds = data.load("digits", split="val")
    s = ds[0]
    img = np.asarray(s.image)
    assert img.shape == (32, 32, 3) and img.max() > 200 and img.min() < 60  # dark ink on light ground
    word = ds.classnames[s.label]
    assert f"a handwritten digit {s.label}" in s.captions and f"the number {word}" in s.captions
    assert ds.classnames[:3] == ["zero", "one", "two"]
