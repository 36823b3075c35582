"""Contact sheets: a grid of samples with their first caption, to look at a dataset.

The title names dataset, split and view; OpenMoji images carry the credit line their license
(CC BY-SA 4.0) asks for, and Twemoji images theirs (CC-BY 4.0). :func:`style_sheet` shows the
same samples in several styles (``vlkit data show openmoji --styles all``). Samples are chosen by a salted hash of their position, so the same
seed shows the same samples.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import UserError
from .dataset import VLDataset
from .splits import hash_order


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(img: Image.Image, cell: int) -> Image.Image:
    """Scale to fit a cell; small images (8x8 digits, 64 px emoji) grow with crisp pixels."""
    f = cell / max(img.size)
    resample = Image.Resampling.NEAREST if f >= 2 else Image.Resampling.BICUBIC
    return img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), resample)


def contact_sheet(dataset: VLDataset, n: int = 32, out_png: str | Path = "contact_sheet.png", seed: int = 0,
                  cols: int = 8, cell: int = 128) -> Path:
    """Write a grid of ``n`` samples (image + wrapped first caption) to ``out_png``; returns the path."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"the number of images to show must be >= 1, got {n!r}; pass --n 32, say")
    if len(dataset) == 0:
        raise UserError(f"{dataset.name} split {dataset.split!r} is empty: nothing to show")
    picks = sorted(hash_order(range(len(dataset)), f"sheet:{seed}")[: min(n, len(dataset))])
    cols = max(1, min(cols, len(picks)))
    rows = -(-len(picks) // cols)
    small, big = _font(11), _font(16)
    line_h, n_lines, pad = 13, 3, 6
    cell_h = cell + n_lines * line_h + pad
    title_h, foot_h = 30, 22
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, title_h + rows * cell_h + foot_h), "white")
    draw = ImageDraw.Draw(sheet)
    title = (f"{dataset.name} / split {dataset.split} / view {dataset.view or '-'}: "
             f"{len(picks)} of {len(dataset)} samples")
    draw.text((pad, 7), title, fill="black", font=big)
    for k, i in enumerate(picks):
        sample = dataset[i]
        x, y = pad + (k % cols) * (cell + pad), title_h + (k // cols) * cell_h
        img = _fit(sample.image, cell)
        sheet.paste(img, (x + (cell - img.width) // 2, y + (cell - img.height) // 2))
        lines = textwrap.wrap(sample.captions[0], width=max(8, cell // 6))
        if len(lines) > n_lines:
            lines = lines[: n_lines - 1] + [lines[n_lines - 1][: max(1, cell // 6 - 3)] + "..."]
        for j, line in enumerate(lines):
            draw.text((x, y + cell + 2 + j * line_h), line, fill=(40, 40, 40), font=small)
    credit = dataset.meta_at(picks[0]).get("credit") if dataset.name == "openmoji" else None
    if credit:  # the credit of the design shown (OpenMoji, Twemoji)
        draw.text((pad, sheet.height - foot_h + 4), credit, fill=(60, 60, 60), font=small)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def style_sheet(datasets: dict[str, VLDataset], n: int = 8, out_png: str | Path = "styles.png", seed: int = 0,
                cell: int = 96) -> Path:
    """A grid of the same ``n`` samples (rows) in each style (columns, ``{style: dataset}``);
    the datasets must be one dataset drawn in several styles (same length, same captions)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"the number of images to show must be >= 1, got {n!r}; pass --n 8, say")
    first = next(iter(datasets.values()))
    if len(first) == 0:
        raise UserError(f"{first.name} split {first.split!r} is empty: nothing to show")
    picks = sorted(hash_order(range(len(first)), f"sheet:{seed}")[: min(n, len(first))])
    small, big = _font(11), _font(16)
    pad, name_w, title_h, head_h, foot_h = 6, 150, 30, 18, 22
    cols = len(datasets)
    sheet = Image.new("RGB", (name_w + cols * (cell + pad) + pad, title_h + head_h + len(picks) * (cell + pad) + foot_h),
                      "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 7), f"{first.name} / split {first.split}: {len(picks)} samples in {cols} styles", fill="black",
              font=big)
    for c, style in enumerate(datasets):
        draw.text((name_w + c * (cell + pad), title_h), style, fill=(40, 40, 40), font=small)
    for r, i in enumerate(picks):
        y = title_h + head_h + r * (cell + pad)
        name = textwrap.shorten(first.captions_at(i)[0], width=name_w // 6, placeholder="...")
        draw.text((pad, y + cell // 2 - 6), name, fill=(40, 40, 40), font=small)
        for c, ds in enumerate(datasets.values()):
            img = _fit(ds[i].image, cell)
            x = name_w + c * (cell + pad)
            sheet.paste(img, (x + (cell - img.width) // 2, y + (cell - img.height) // 2))
    credit = first.meta_at(picks[0]).get("credit")
    if credit:
        draw.text((pad, sheet.height - foot_h + 4), credit, fill=(60, 60, 60), font=small)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
