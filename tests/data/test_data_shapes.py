"""shapes: seeded scenes, captions that match the pixels' layout, held-out pairs."""

from __future__ import annotations

import numpy as np

from vlkit import data
from vlkit.data.shapes import object_masks, phrase

SMALL_SHAPES = {"n_train": 120, "n_val": 30, "n_test": 60}


def _load(split, **kw):
    return data.load("shapes", split=split, **{**SMALL_SHAPES, **kw})


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = _load("train"), _load("train"), _load("train", seed=1)
    assert all(np.array_equal(np.asarray(a[i].image), np.asarray(b[i].image)) for i in range(10))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert any(not np.array_equal(np.asarray(a[i].image), np.asarray(c[i].image)) for i in range(10))


def test_held_out_pairs_never_in_train_or_val_but_in_test():
    held = {("red", "circle"), ("blue", "square")}
    for split in ("train", "val"):
        ds = _load(split)
        pairs = {(o["color"], o["shape"]) for i in range(len(ds)) for o in ds.meta_at(i)["objects"]}
        assert not pairs & held, split
    test = _load("test")
    novel = [i for i in range(len(test)) if test.meta_at(i)["novel"]]
    assert novel and {(o["color"], o["shape"]) for i in novel for o in test.meta_at(i)["objects"]} & held


def test_captions_and_labels_follow_the_objects():
    ds = _load("train", max_objects=3)
    counts = set()
    for i in range(len(ds)):
        s = ds[i]
        objs = s.meta["objects"]
        counts.add(len(objs))
        assert s.captions[0].startswith(phrase(objs[0]))
        assert ds.labels_of("count")[i] == len(objs) - 1
        assert ds.views["color"].classnames[s.labels["color"]] == objs[0]["color"]
        for a, b, rel in s.meta["relations"]:
            dx, dy = objs[b]["cx"] - objs[a]["cx"], objs[b]["cy"] - objs[a]["cy"]
            want = ("left of" if dx > 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy > 0 else "below")
            assert rel == want and rel in s.captions[0]
    assert counts == {1, 2, 3}


def test_masks_lie_in_boxes_and_carry_the_object_color():
    ds = _load("val", max_objects=2)
    s = ds[0]
    masks = object_masks(s.meta, 64)
    img = np.asarray(s.image).astype(int)
    assert masks.shape == (len(s.meta["objects"]), 64, 64)
    for m, o in zip(masks, s.meta["objects"]):
        ys, xs = np.nonzero(m)
        x0, y0, x1, y1 = o["box"]
        assert m.sum() > 20 and xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() <= y1 + 1
        inner = img[m].mean(axis=0)
        assert np.abs(inner - 255).max() > 40, "object pixels are not drawn"
