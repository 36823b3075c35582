"""Every export format loads back through its user format with the same images and captions."""

from __future__ import annotations

import json

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


def _shapes(n_val=6):
    return data.load("shapes:color", split="val", n_train=10, n_val=n_val, n_test=10)


def _one_line_error(match, *args, **kw):
    with pytest.raises(UserError, match=match) as info:
        export(*args, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("fmt", ["webdataset", "captions", "imagefolder"])
def test_export_into_a_non_empty_folder_is_refused_and_overwrite_leaves_no_stale_files(tmp_path, fmt):
    out = tmp_path / "out"
    first = export(_shapes(12), fmt, out, shard_size=5)
    assert first.n_samples == 12 and len(first.files) == {"webdataset": 4, "captions": 13, "imagefolder": 24}[fmt]
    if fmt == "webdataset":  # open_clip's sizes.json: samples per shard, so pretraining can stream them
        assert json.loads((out / "sizes.json").read_text()) == {
            "shards-000000.tar": 5, "shards-000001.tar": 5, "shards-000002.tar": 2}
    before = sorted(p for p in out.rglob("*") if p.is_file())
    msg = _one_line_error("not empty.*overwrite=True", _shapes(4), fmt, out, shard_size=5)
    assert str(out) in msg
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before  # the refusal touched nothing
    second = export(_shapes(4), fmt, out, shard_size=5, overwrite=True)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(second.files) and second.n_samples == 4  # the count is what was written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = data.load(fmt, path=second, split="all")
    assert len(back) == 4 and _as_dict(back) == _as_dict(_shapes(4))


def test_overwrite_refuses_a_folder_with_files_an_export_does_not_write(tmp_path):
    out = tmp_path / "out"
    export(_shapes(), "captions", out)
    (out / "notes.md").write_text("mine")
    _one_line_error(r"holds files an export does not write \(first: notes\.md\)", _shapes(), "captions", out,
                    overwrite=True)
    assert (out / "notes.md").read_text() == "mine" and (out / "captions.csv").is_file()  # nothing deleted


def test_export_onto_an_existing_file_is_one_line(tmp_path):
    target = tmp_path / "taken.csv"
    target.write_text("x")
    _one_line_error(r"taken\.csv is a file, not a folder", _shapes(), "captions", target)
    _one_line_error(r"cannot create export folder", _shapes(), "captions", target / "sub")
    assert target.read_text() == "x"


def test_imagefolder_count_is_the_samples_written_not_the_dataset_length(tmp_path):
    from vlkit.data.dataset import ArrayImages, View, VLDataset

    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    ds = VLDataset("mine", "all", ArrayImages(pixels), [["a"], ["b"], ["c"]], {"kind": np.array([0, -1, 1])},
                   [{}, {}, {}], {"kind": View(("cat", "dog"))}, "kind", "cid")
    out = export(ds, "imagefolder", tmp_path / "out")
    assert out.n_samples == 2 and sorted(out.files) == ["cat/000000.png", "cat/000000.txt",
                                                         "dog/000002.png", "dog/000002.txt"]
