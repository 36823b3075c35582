"""Split rules the mutation run (docs/testing.md) found untested, each against a hand-computed case.

- ``partition_keys``: the last part takes the rest, whatever the rounding of its share.
- ``fewshot_splits``: the CoOp protocol's train and validation shots are the documented rule's
  (``_rule_fewshot`` of the golden tests, with hashlib alone) under purposes "train" and "val",
  whatever the datasets' own split names; ``allow_fewer`` reaches both draws.
- unlabelled samples (label -1) are never drawn as a class.
- ``base_new_split`` saves its record where and as its docstring says.
- ``select_classes`` keeps int64 labels and works on a view without class names.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from golden_splits import CLASSNAMES, LABELS, dataset
from test_fewshot_golden import _rule_fewshot
from vlkit import data
from vlkit.data.splits import partition_keys
from vlkit.errors import UserError


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_partition_last_part_takes_the_rest_in_hash_order():
    keys = [f"k{i}" for i in range(10)]
    # shares 0.5, 0.3, 0.1 of 10: 5 and 3, then the rest (2), not round(0.1 * 10) = 1
    got = partition_keys(keys, (0.5, 0.3, 0.1), seed=4, salt="s")
    order = sorted(keys, key=lambda k: hashlib.sha256(f"s:seed=4\x00{k}".encode()).hexdigest())
    assert got == {"train": sorted(order[:5]), "val": sorted(order[5:8]), "test": sorted(order[8:])}


def _unnamed():
    """The golden dataset with a view that has no class names."""
    ds = dataset()
    ds.views = {"cls": type(ds.views["cls"])(classnames=None)}
    return ds


def _positions(subset, parent) -> list[int]:
    """Positions in ``parent`` of the samples of ``subset`` (a subset of it)."""
    return np.flatnonzero(np.isin(parent._indices, subset._indices)).tolist()


def test_fewshot_splits_draw_train_and_val_shots_by_the_rule():
    # datasets whose split names are neither "train" nor "val": the purposes come from the protocol
    train, val = dataset("trainval"), dataset("holdout")
    tr, va = data.fewshot_splits(train, val, shots=3, seed=3)  # 3 of the 5, 4 and 5 per class
    assert _positions(tr, train) == _rule_fewshot(train.fingerprint(), LABELS, 3, 3, "train")
    assert _positions(va, val) == _rule_fewshot(val.fingerprint(), LABELS, 3, 3, "val")
    tr, va = data.fewshot_splits(train, val, shots=5, seed=3, allow_fewer=True)  # class 1 has 4
    assert len(tr) == 5 + 4 + 5 and len(va) == 4 + 4 + 4  # validation: min(K, 4) per class
    assert _positions(va, val) == _rule_fewshot(val.fingerprint(), LABELS, 4, 3, "val")
    with pytest.raises(UserError, match="class 'bee' has 4 samples"):
        data.fewshot_splits(train, None, shots=5, seed=3)  # allow_fewer is off by default


def test_fewshot_splits_validation_allow_fewer():
    train, val = dataset("trainval"), dataset("holdout").subset([0, 1, 2, 3, 4, 5, 6])  # 3, 2, 2
    _, va = data.fewshot_splits(train, val, shots=2, seed=1, allow_fewer=True)
    assert len(va) == 6
    _, va = data.fewshot_splits(train, val, shots=3, seed=1, allow_fewer=True)  # all of bee, cat
    assert len(va) == 3 + 2 + 2
    with pytest.raises(UserError, match="fewer than 3 shots"):
        data.fewshot_splits(train, val, shots=3, seed=1)


def test_unlabelled_samples_are_not_a_class():
    labels = np.array(LABELS)
    labels[[1, 4]] = -1  # two samples without a label
    ds = dataset()
    ds._labels = {"cls": labels}
    rule = _rule_fewshot(ds.fingerprint(), labels.tolist(), 2, 1, "train")  # draws "class -1" too
    assert data.fewshot_indices(ds, 2, seed=1) == [i for i in rule if labels[i] >= 0]
    assert len([i for i in rule if labels[i] >= 0]) == 6  # 2 of each real class


@pytest.mark.parametrize("key, folder", [("", "classes"), ("mine", "mine")])
def test_base_new_split_saves_its_record(fresh_cache, key, folder):
    names = ["ant", "bee", "cat"]
    with pytest.raises(UserError, match=r"^base/new split needs at least 2 classes, got 1$"):
        data.base_new_split(names[:1])
    split = data.base_new_split(names, key=key) if key else data.base_new_split(names)
    digest = hashlib.sha256(b"ant\x00bee\x00cat").hexdigest()[:12]
    path = fresh_cache / "data" / "splits" / folder / f"base-new-{digest}.json"
    assert json.loads(path.read_text()) == {"base": [0, 1], "new": [2], "classnames": names}
    assert split == {"base": [0, 1], "new": [2]}


def test_select_classes_keeps_int64_labels_and_works_without_names():
    ds = dataset()
    picked = data.select_classes(ds, [2, 0])
    assert picked.targets.dtype == np.int64
    assert picked.classnames == [CLASSNAMES[2], CLASSNAMES[0]]
    expected = [0 if label == 2 else 1 for label in LABELS if label in (0, 2)]  # 2 -> 0, 0 -> 1
    assert picked.targets.tolist() == expected
    only_two = data.select_classes(_unnamed(), [2])  # no names: the label range is read from the ids
    assert only_two.classnames is None and only_two.targets.tolist() == [0] * LABELS.count(2)
    assert len(data.select_classes(ds, [])) == 0



def test_too_few_shots_names_the_class_or_its_label():
    fix = "; use fewer shots or pass allow_fewer=True to take all it has$"
    with pytest.raises(UserError, match="^class 'bee' has 4 samples in the train split, fewer than 5 shots" + fix):
        data.fewshot_indices(dataset(), 5, seed=0)
    one_ant = dataset().subset([i for i, label in enumerate(LABELS) if label != 0 or i == 0])
    with pytest.raises(UserError, match="^class 'ant' has 1 samples"):  # class 0 is named too
        data.fewshot_indices(one_ant, 2, seed=0)
    with pytest.raises(UserError, match="^class '1' has 4 samples"):  # no class names: the label
        data.fewshot_indices(_unnamed(), 5, seed=0)
    beyond = dataset()
    beyond._labels = {"cls": np.array([3] + LABELS[1:])}  # label 3 with 3 names
    with pytest.raises(UserError, match="^class '3' has 1 samples"):
        data.fewshot_indices(beyond, 2, seed=0)
    with pytest.raises(UserError, match=r"^shots must be at least 1, got 0$"):
        data.fewshot_indices(dataset(), 0, seed=0)
    with pytest.raises(UserError, match=r"^few-shot sampling needs a labelled view; golden has none selected$"):
        data.fewshot_indices(dataset().with_view(None), 1, seed=0)


def test_fewshot_is_saved_under_its_name_and_allow_fewer_has_its_own_file(fresh_cache):
    ds = dataset()
    fp = ds.fingerprint()
    loose = data.fewshot_indices(ds, 5, seed=2, allow_fewer=True)
    folder = fresh_cache / "data" / "splits" / "golden"
    assert json.loads((folder / f"fewshot-{fp}-seed2-k5-train-fewer.json").read_text()) == loose
    strict = data.fewshot_indices(ds, 2, seed=2, purpose="val")
    assert json.loads((folder / f"fewshot-{fp}-seed2-k2-val.json").read_text()) == strict
    with pytest.raises(UserError, match="fewer than 5 shots"):  # the saved allow_fewer draw is not reused
        data.fewshot_indices(ds, 5, seed=2)
