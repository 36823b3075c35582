"""Procedural re-stylings of emoji images: the same concept drawn another way.

A model that learned one emoji design's line style, not its concepts, fails on another design
(vlkit issue 18). These styles change how an image is drawn and keep what it shows, so a
model's drop from ``original`` to each style measures (and randomising them in training may
reduce) its dependence on the drawing:

- ``original``: unchanged;
- ``grey``: greyscale (R == G == B);
- ``poster``: posterised to 4 evenly spaced levels per channel (0, 85, 170, 255);
- ``edges``: line art: a Sobel edge map of the luminance, drawn dark on white;
- ``flat``: flat colour: the outline (dark lines at most 2 px wide, with their anti-aliased
  edge; larger dark regions stay) filled with the neighbouring colour, then the image quantised to 6 colours (median cut, no
  dithering);
- ``thick``: the dark outline dilated by one pixel (3x3 max filter on its mask);
- ``thin``: the dark outline eroded by half a pixel (eroded at twice the size, then shrunk);
- ``background``: the white background (near-white pixels connected to the border) replaced
  by a colour, stripes, checks or a gradient chosen from the image's seed (never white).

Images are RGB on a white background, as the embedded datasets draw them; "dark" means
luminance below :data:`DARK` (OpenMoji outlines are black). Every style is a pure function of
(image, seed): the same image and seed give the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageFilter

from ..errors import unknown_name
from .dataset import ImageSource

DARK = 80  # luminance below this is outline
WHITE = 245  # every channel at or above this is background white
N_FLAT_COLORS = 6
POSTER_LEVELS = 4  # levels per channel
LINE = 150  # luminance below this, next to an outline, is its anti-aliased edge (flat style)
EDGE_THRESHOLD = 48.0  # Sobel magnitude (luminance units) that draws a line


def _luma(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.int16)


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def _fill_dark(img: Image.Image, dark: np.ndarray, rounds: int = 3, below: int = DARK) -> np.ndarray:
    """Pixels under ``dark`` replaced by their brightest neighbour, repeated ``rounds`` times:
    a thin outline disappears into the regions beside it. (H, W, 3) uint8."""
    arr = np.asarray(img.convert("RGB")).copy()
    todo = dark.copy()
    for _ in range(rounds):
        if not todo.any():
            break
        grown = np.asarray(Image.fromarray(arr).filter(ImageFilter.MaxFilter(3)))
        arr[todo] = grown[todo]
        todo = todo & (_luma(Image.fromarray(arr)) < below)
    return arr


def grey(img: Image.Image, seed: int) -> Image.Image:
    return img.convert("L").convert("RGB")


def poster(img: Image.Image, seed: int) -> Image.Image:
    step = 255 / (POSTER_LEVELS - 1)  # levels 0, 85, 170, 255: white stays white
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return Image.fromarray((np.round(arr / step) * step).round().astype(np.uint8))


def edges(img: Image.Image, seed: int) -> Image.Image:
    y = np.pad(_luma(img).astype(np.float32), 1, mode="edge")  # (H+2, W+2)
    gx = (y[:-2, 2:] + 2 * y[1:-1, 2:] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[1:-1, :-2] + y[2:, :-2])
    gy = (y[2:, :-2] + 2 * y[2:, 1:-1] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[:-2, 1:-1] + y[:-2, 2:])
    line = np.hypot(gx, gy) / 4 > EDGE_THRESHOLD  # (H, W); /4: the Sobel kernel's gain
    out = np.where(line, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L").convert("RGB")


def thin_lines(mask: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` that a 3x3 opening removes: lines at most 2 px wide."""
    opened = _mask_image(mask).filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    return mask & ~(np.asarray(opened) > 0)


def flat(img: Image.Image, seed: int) -> Image.Image:
    luma = _luma(img)
    line = thin_lines(luma < DARK)
    halo = (np.asarray(_mask_image(line).filter(ImageFilter.MaxFilter(3))) > 0) & (luma < LINE)  # its anti-aliasing
    filled = Image.fromarray(_fill_dark(img, line | halo))
    q = filled.quantize(colors=N_FLAT_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return q.convert("RGB")


def thick(img: Image.Image, seed: int) -> Image.Image:
    dark = _luma(img) < DARK
    grown = np.asarray(_mask_image(dark).filter(ImageFilter.MaxFilter(3))) > 0
    arr = np.asarray(img.convert("RGB")).copy()
    arr[grown & ~dark] = 0
    return Image.fromarray(arr)


def thin(img: Image.Image, seed: int) -> Image.Image:
    w, h = img.size
    big = img.convert("RGB").resize((2 * w, 2 * h), Image.Resampling.NEAREST)
    dark = _luma(big) < DARK
    kept = np.asarray(_mask_image(dark).filter(ImageFilter.MinFilter(3))) > 0
    arr = _fill_dark(big, dark & ~kept)
    return Image.fromarray(arr).resize((w, h), Image.Resampling.BOX)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"background:{seed}".encode()).digest()[:8], "little"))


def background_pattern(size: tuple[int, int], seed: int) -> np.ndarray:
    """(H, W, 3) uint8: a solid colour, stripes, checks or a gradient; no channel above 235."""
    w, h = size
    rng = _rng(seed)
    a, b = rng.integers(40, 236, size=(2, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    kind = int(rng.integers(4))
    period = int(rng.integers(4, 12))
    if kind == 0:
        t = np.zeros((h, w))
    elif kind == 1:
        t = ((xx + yy) // period % 2).astype(float)
    elif kind == 2:
        t = ((xx // period + yy // period) % 2).astype(float)
    else:
        t = yy / max(1, h - 1)
    return (a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]).round().astype(np.uint8)


def background(img: Image.Image, seed: int) -> Image.Image:
    from scipy import ndimage

    arr = np.asarray(img.convert("RGB")).copy()
    white = (arr >= WHITE).all(axis=2)
    regions, _ = ndimage.label(white)
    border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    outside = np.isin(regions, border[border > 0])
    arr[outside] = background_pattern(img.size, seed)[outside]
    return Image.fromarray(arr)


STYLES = {
    "original": lambda img, seed: img.convert("RGB"),
    "grey": grey,
    "poster": poster,
    "edges": edges,
    "flat": flat,
    "thick": thick,
    "thin": thin,
    "background": background,
}


def check_style(name: str) -> str:
    if name not in STYLES:
        raise unknown_name("style", name, STYLES, hint="e.g. openmoji@style=edges")
    return name


def restyle(img: Image.Image, style: str, seed: int = 0) -> Image.Image:
    """``img`` drawn in ``style`` (see the module docstring); deterministic in (img, seed)."""
    return STYLES[check_style(style)](img, seed)


def image_seed(seed: int, key: str) -> int:
    """A per-image seed from a dataset seed and the image's stable key (its code points)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") >> 1


class StyleMix:
    """Training-time style randomisation: with probability ``p`` a sample is drawn in one of
    ``styles`` (uniformly), chosen by a hash of (seed, epoch, index), so the choice is the
    same with any number of workers and after a resume. Picklable."""

    def __init__(self, p: float, styles: tuple[str, ...] | list[str] | None = None, seed: int = 0):
        names = tuple(styles) if styles else tuple(s for s in STYLES if s != "original")
        for s in names:
            check_style(s)
        self.p, self.styles, self.seed = float(p), names, int(seed)

    def pick(self, epoch: int, index: int) -> str:
        h = image_seed(self.seed, f"style-mix:{epoch}:{index}")
        if (h % 1_000_003) / 1_000_003 >= self.p:
            return "original"
        return self.styles[(h // 1_000_003) % len(self.styles)]

    def __call__(self, img: Image.Image, epoch: int, index: int) -> Image.Image:
        style = self.pick(epoch, index)
        return img if style == "original" else restyle(img, style, image_seed(self.seed, f"{epoch}:{index}"))


class StyledImages(ImageSource):
    """Another image source's images drawn in ``style``, one seed per image, on access."""

    def __init__(self, source: ImageSource, style: str, seeds: list[int]):
        if len(seeds) != len(source):
            raise ValueError(f"{len(seeds)} seeds for {len(source)} images")
        self.source, self.style, self.seeds = source, check_style(style), list(seeds)

    def __len__(self) -> int:
        return len(self.source)

    def load(self, i: int) -> Image.Image:
        return restyle(self.source.load(i), self.style, self.seeds[i])

    def describe(self, i: int) -> str:
        return f"{self.source.describe(i)} (style {self.style})"
