"""A small fixed dataset and the splits drawn from it, for the golden-split tests.

Imported by ``test_fewshot_golden.py`` and run as a script by it in fresh processes with other
``PYTHONHASHSEED`` values (Python's ``hash()`` of a string is salted per process, so a split
that used it would agree with itself inside one process and differ between two):

    VLKIT_CACHE=DIR PYTHONHASHSEED=123 python tests/data/golden_splits.py
"""

from __future__ import annotations

import json

import numpy as np

# 14 samples of 3 classes (5, 4 and 5 samples): labels in a fixed, unsorted order
LABELS = [0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 2]
CLASSNAMES = ("ant", "bee", "cat")
CONTENT_ID = "golden-splits-v1"
KEYS = [f"img{i:02d}.png" for i in range(10)]  # for partition_keys
BASE_NEW_NAMES = ["ant", "bee", "cat", "dog", "eel"]


def dataset(split: str = "train"):
    from vlkit.data import View, VLDataset
    from vlkit.data.dataset import ArrayImages

    n = len(LABELS)
    return VLDataset("golden", split, ArrayImages(np.zeros((n, 2, 2, 3), dtype=np.uint8)), [[""]] * n,
                     {"cls": np.array(LABELS)}, [{} for _ in range(n)], {"cls": View(classnames=CLASSNAMES)},
                     "cls", CONTENT_ID)


def splits() -> dict:
    """Every split the tests pin, as plain JSON types."""
    from vlkit import data
    from vlkit.data.splits import partition_keys

    ds = dataset()
    out = {"fingerprint": ds.fingerprint()}
    for seed, k in ((1, 2), (2, 2), (1, 3)):
        out[f"fewshot seed={seed} k={k}"] = data.fewshot_indices(ds, k, seed=seed)
    out["fewshot seed=1 k=2 val"] = data.fewshot_indices(ds, 2, seed=1, purpose="val")
    out["fewshot seed=3 k=4"] = data.fewshot_indices(ds, 4, seed=3)  # all of class 1, 4 of 5 of the others
    base = data.select_classes(ds, [0, 2])
    out["fewshot classes=0,2 seed=1 k=2"] = data.fewshot_indices(base, 2, seed=1)
    out["partition seed=0"] = partition_keys(KEYS, (0.6, 0.2, 0.2), seed=0, salt="golden")
    out["base_new"] = data.base_new_split(BASE_NEW_NAMES, key="golden")
    return out


if __name__ == "__main__":
    print(json.dumps(splits(), sort_keys=True))
