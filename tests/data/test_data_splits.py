"""Few-shot and base/new splits: deterministic, order-independent, protocol-shaped."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from vlkit import data
from vlkit.errors import UserError


def _digits():
    return data.load("digits", split="train"), data.load("digits", split="val")


def test_fewshot_is_independent_of_request_order(tmp_path):
    old = os.environ["VLKIT_CACHE"]
    results = []
    try:
        for order, cache in ((("train", "val"), "a"), (("val", "train"), "b")):
            os.environ["VLKIT_CACHE"] = str(tmp_path / cache)  # nothing saved is shared
            train, val = _digits()
            got = {}
            for which in order:
                got[which] = data.fewshot_indices(train if which == "train" else val, 4, seed=1)
            got["train16"] = data.fewshot_indices(train, 16, seed=1)
            results.append(got)
    finally:
        os.environ["VLKIT_CACHE"] = old
    assert results[0] == results[1]


def test_fewshot_takes_k_per_class_and_depends_on_seed():
    train, val = _digits()
    a = data.fewshot_indices(train, 4, seed=1)
    assert np.bincount(train.targets[a], minlength=10).tolist() == [4] * 10
    assert a == data.fewshot_indices(train, 4, seed=1)
    assert a != data.fewshot_indices(train, 4, seed=2)
    tr, va = data.fewshot_splits(train, val, shots=8, seed=1)
    assert len(tr) == 80 and len(va) == 40  # validation: min(K, 4) per class (CoOp)
    assert set(tr.targets.tolist()) == set(range(10))


def test_too_many_shots_names_the_class_and_allow_fewer_takes_all():
    val = data.load("digits", split="val")
    smallest = int(np.bincount(val.targets).min())
    with pytest.raises(UserError, match=r"class '\w+' has \d+ samples.*allow_fewer=True"):
        data.fewshot_indices(val, smallest + 1, seed=0)
    got = data.fewshot_indices(val, smallest + 1, seed=0, allow_fewer=True)
    assert len(got) == sum(min(c, smallest + 1) for c in np.bincount(val.targets))


@pytest.mark.parametrize("n", [2, 9, 10])
def test_base_new_split_follows_the_protocol(n):
    names = [f"c{i}" for i in range(n)]
    split = data.base_new_split(names, key="test")
    assert split["base"] == list(range(math.ceil(n / 2))) and split["new"] == list(range(math.ceil(n / 2), n))
    assert not set(split["base"]) & set(split["new"])


def test_select_classes_relabels_and_keeps_names():
    test = data.load("digits", split="test")
    new = data.select_classes(test, data.base_new_split(test.classnames)["new"])
    assert new.classnames == ["five", "six", "seven", "eight", "nine"]
    assert set(new.targets.tolist()) == set(range(5))
    s = new[0]
    assert new.classnames[s.label] == test.classnames[s.meta["digit"]]
    assert new.fingerprint() != test.fingerprint()
