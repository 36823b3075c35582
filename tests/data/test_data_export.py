"""Every export format loads back through its user format with the same images and captions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vlkit import data
from vlkit.data.export import export
from vlkit.errors import UserError


def _as_dict(ds):
    """image bytes -> (captions, class name): order-free, as imagefolder regroups by class."""
    out = {}
    for i in range(len(ds)):
        s = ds[i]
        name = ds.classnames[s.label] if ds.classnames is not None and s.label >= 0 else None
        out[np.asarray(s.image).tobytes()] = (s.captions, name)
    return out


@pytest.mark.parametrize("fmt", ["webdataset", "captions", "imagefolder"])
def test_export_round_trip(tmp_path, fmt):
    src = data.load("shapes:color", split="val", n_train=10, n_val=25, n_test=10)
    spec = export(src, fmt, tmp_path / fmt, shard_size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = data.load(fmt, path=spec, split="all")
    assert len(back) == len(src)
    assert _as_dict(back) == _as_dict(src)
    if fmt == "webdataset":
        assert len(back.info["shards"]) == 3 and back.classnames == src.classnames


def test_imagefolder_export_needs_class_names(tmp_path):
    ds = data.load("shapes", split="val", n_train=10, n_val=5, n_test=10).with_view(None)
    with pytest.raises(UserError, match="class names"):
        export(ds, "imagefolder", tmp_path)
    with pytest.raises(UserError, match="unknown export format"):
        export(ds, "parquet", tmp_path)
