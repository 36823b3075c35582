"""Addressing datasets: spec strings, unknown names, views and options."""

from __future__ import annotations

import pytest

from vlkit import data
from vlkit.errors import UserError


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError) as e:
        data.load("openmojii")
    msg = str(e.value)
    assert "openmojii" in msg and "did you mean 'openmoji'" in msg
    for name in ("captions", "digits", "imagefolder", "openmoji", "shapes", "webdataset"):
        assert name in msg


@pytest.mark.parametrize("spec, expected", [
    ("openmoji", ("openmoji", None, None)),
    ("openmoji:subgroup", ("openmoji", "subgroup", None)),
    ("imagefolder=/data/pets", ("imagefolder", None, "/data/pets")),
    ("webdataset:label=/d/s-{000..009}.tar", ("webdataset", "label", "/d/s-{000..009}.tar")),
    ("captions=C:/x=y.csv", ("captions", None, "C:/x=y.csv")),
])
def test_parse_spec(spec, expected):
    assert data.parse_spec(spec) == expected


def test_spec_view_and_options_reach_the_dataset():
    ds = data.load("digits:digit", split="val", image_size=16)
    assert ds.view == "digit" and ds[0].image.size == (16, 16)


def test_unknown_view_and_option_are_user_errors():
    with pytest.raises(UserError, match="no view 'colour'.*digit"):
        data.load("digits:colour")
    with pytest.raises(UserError, match="image_sise.*valid keys.*image_size"):
        data.load("digits", image_sise=16)
    with pytest.raises(UserError, match="no split 'dev'"):
        data.load("digits", split="dev")


def test_user_format_needs_a_path():
    with pytest.raises(UserError, match="imagefolder=/path"):
        data.load("imagefolder")


def test_every_entry_describes_itself():
    listed = data.list_datasets()
    assert [d["name"] for d in listed] == data.DATASETS.names()
    for d in listed:
        assert d["description"] and d["splits"], d["name"]
