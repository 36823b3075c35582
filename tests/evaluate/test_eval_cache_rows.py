"""Feature-cache entries with the wrong number of rows are recomputed where vlkit reads them.

The cache checks a caller's ``rows=`` (vlkit.data.cache); these call sites pass it: an entry
that is a valid, checksummed file but holds another number of rows (e.g. written by an older
vlkit for a dataset that has since changed) is recomputed with one warning, not handed to an
evaluator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlkit.data.cache import FeatureCache, canonical_key, write_tensors
from vlkit.evaluate import run


class StableTransform:
    """The fake model's transform with a stable repr, so cache keys repeat across runs."""

    def __call__(self, im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)

    def __repr__(self):
        return "StableTransform()"


class RecordingCache(FeatureCache):
    def __init__(self, root):
        super().__init__(root)
        self.keys = []

    def get(self, key_parts, compute, rows=None):
        self.keys.append(dict(key_parts))
        return super().get(key_parts, compute, rows=rows)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_entry_with_wrong_rows_is_recomputed_in_evaluation(tmp_path, fakes, fake_data, kind):
    class Model(fakes.Model):
        def preprocess(self, train=False):
            return StableTransform()

    model = Model()
    first = RecordingCache(tmp_path / "cache")
    want = run(model, fake_data, ["retrieval"], cache=first)["metrics"]
    is_image = (lambda k: "data" in k) if kind == "image" else (lambda k: k.get("kind") == "eval-text")
    key = next(k for k in first.keys if is_image(k))
    write_tensors(first.path(key), {"__tensor__": torch.randn(7, model.dim)}, canonical_key(key))  # valid, 7 rows

    calls = model.image_calls
    again = FeatureCache(tmp_path / "cache")  # a later process: nothing in memory
    with pytest.warns(UserWarning, match=r"holds 7 rows where \d+ were asked for; recomputing it"):
        got = run(model, fake_data, ["retrieval"], cache=again)["metrics"]
    assert got == want
    assert again.misses == 1 and (model.image_calls > calls) == (kind == "image")
