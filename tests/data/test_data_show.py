"""Contact sheets: a PNG grid with captions, title and (for openmoji) the credit line."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlkit import data
from vlkit.data.show import contact_sheet


def _ink_rows(png):
    img = np.asarray(Image.open(png).convert("L"))
    return img, (img < 128).any(axis=1)


def test_openmoji_sheet_has_grid_and_credit(openmoji_all, tmp_path):
    ds = data.load("openmoji", split="test")
    out = contact_sheet(ds, n=16, out_png=tmp_path / "sheet.png", seed=0, cols=8, cell=64)
    img, ink = _ink_rows(out)
    assert img.shape[1] == 8 * (64 + 6) + 6
    assert ink[:30].any() and ink[-22:].any()  # title line, credit line
    other = contact_sheet(data.load("digits", split="test"), n=16, out_png=tmp_path / "d.png", cols=8, cell=64)
    d_img, d_ink = _ink_rows(other)
    assert not d_ink[-22:].any()  # no credit line for digits
    same = contact_sheet(ds, n=16, out_png=tmp_path / "again.png", seed=0, cols=8, cell=64)
    assert np.array_equal(np.asarray(Image.open(same)), np.asarray(Image.open(out)))
