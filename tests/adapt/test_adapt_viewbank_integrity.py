"""The adaptation ViewBank checks its file before use (sha256, shapes, rows == positions,
positions sorted and unique, finite) and recomputes a bad one with one warning line; a damaged
bank never crashes a later run nor hands it wrong features."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlkit.adapt.features import ViewBank
from vlkit.data import cache as cache_module
from vlkit.data.cache import write_tensors

KEY = {"kind": "adapt.image", "model": "m-1", "data": "d-1", "transform": "t", "view": 0, "aug_seed": 0}
TABLE = torch.arange(40, dtype=torch.float32).reshape(10, 4) / 7 + 1  # the true features of positions 0..9


class Encoder:
    """compute(positions) -> rows of TABLE; counts the positions it was asked for."""

    def __init__(self, table=TABLE):
        self.table, self.asked = table, []

    def __call__(self, positions):
        self.asked += list(positions)
        return self.table[torch.from_numpy(np.asarray(positions))]


def _bank(root):
    """(bank, warning messages) of opening the bank of KEY under ``root``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bank = ViewBank(KEY, root)
    return bank, [str(w.message) for w in caught]


def _stored(root, positions=(1, 3, 5)):
    bank, _ = _bank(root)
    bank.get(np.array(positions), Encoder())
    return bank.path


def _assert_recomputed(root, path, *words):
    bank, messages = _bank(root)
    assert len(messages) == 1 and "\n" not in messages[0] and str(path) in messages[0], messages
    assert all(w in messages[0] for w in words), messages[0]
    enc = Encoder()
    feats, n_new = bank.get(np.array([5, 1, 3]), enc)
    assert n_new == 3 and sorted(enc.asked) == [1, 3, 5]
    assert torch.equal(feats, TABLE[[5, 1, 3]])
    again, messages = _bank(root)  # rewritten good: the next run reads it without a word
    assert messages == [] and again.get(np.array([1, 3, 5]), Encoder())[1] == 0


def test_a_good_bank_is_read_back_by_a_later_run(tmp_path):
    _stored(tmp_path)
    bank, messages = _bank(tmp_path)
    feats, n_new = bank.get(np.array([3, 5]), Encoder())
    assert messages == [] and n_new == 0 and torch.equal(feats, TABLE[[3, 5]])


def test_flipped_bytes_are_recomputed(tmp_path):
    path = _stored(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01  # a low bit of the last feature: finite and plausible, but wrong
    path.write_bytes(bytes(raw))
    _assert_recomputed(tmp_path, path, "sha256")


def _write_bank(root, positions, features):
    """A bank file whose checksums are valid but whose content is wrong in some other way."""
    path = ViewBank(KEY, root).path
    write_tensors(path, {"positions": torch.tensor(positions, dtype=torch.int64), "features": features},
                  ViewBank(KEY, root).key)
    return path


@pytest.mark.parametrize("positions, features, words", [
    ([1, 3, 5], TABLE[[1, 3]], ("2 feature rows for 3 positions",)),
    ([1, 5, 3], TABLE[[1, 5, 3]], ("unsorted or repeated",)),
    ([1, 3, 3], TABLE[[1, 3, 3]], ("unsorted or repeated",)),
    ([-1, 3, 5], TABLE[[1, 3, 5]], ("negative",)),
    ([1, 3, 5], torch.stack([TABLE[1], TABLE[3], torch.full((4,), float("nan"))]), ("NaN",)),
])
def test_inconsistent_banks_are_recomputed_not_a_crash(tmp_path, positions, features, words):
    path = _write_bank(tmp_path, positions, features)
    _assert_recomputed(tmp_path, path, *words)


def test_a_bank_of_another_width_is_rebuilt_when_it_grows(tmp_path):
    _write_bank(tmp_path, [1, 3], torch.ones(2, 7))  # a valid file, but not this model's width
    bank, _ = _bank(tmp_path)
    enc = Encoder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats, _ = bank.get(np.array([1, 5]), enc)
    assert torch.equal(feats, TABLE[[1, 5]]) and sorted(set(enc.asked)) == [1, 5]
    assert len(caught) == 1 and "width 7" in str(caught[0].message)


def test_banks_without_checksum_are_recomputed_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_legacy_warned", False)
    path = ViewBank(KEY, tmp_path).path
    save_file({"positions": torch.tensor([1, 3, 5]), "features": torch.zeros(3, 4)}, str(path),
              metadata={"key": ViewBank(KEY, tmp_path).key})  # as an older vlkit wrote it
    bank, messages = _bank(tmp_path)
    assert len(messages) == 1 and "before checksums" in messages[0]
    feats, n_new = bank.get(np.array([1, 3, 5]), Encoder())
    assert n_new == 3 and torch.equal(feats, TABLE[[1, 3, 5]])


def test_nan_features_are_not_stored(tmp_path):
    bad = TABLE.clone()
    bad[3] = float("nan")
    bank, _ = _bank(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats, _ = bank.get(np.array([1, 3]), Encoder(bad))
    assert torch.isnan(feats).any() and not bank.path.exists()
    assert len(caught) == 1 and "not caching" in str(caught[0].message)
