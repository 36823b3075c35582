"""Retrieval examples: text queries with their top-ranked images, the correct ones marked.

The retrieval artifact keeps, for a few text queries, the indices and cosine scores of the
top-5 images and the index of the query's own image (``positive_image``: the only image
recall@k counts). The figure shows each query as a row; a thick green frame marks the query's
own image, an orange frame another image that carries the very same caption (digits and
OpenMoji skin-tone variants share captions: a fair hit that recall@k does not count), grey
the rest.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
from PIL import Image

from .figures import DPI, new_figure, to_png

OWN, SAME_CAPTION, OTHER = "#2ca02c", "#ff7f0e", "#bbbbbb"
THUMB, LABEL_H, HEADER_H, TEXT_W = 80, 16, 18, 190  # pixels


def mark_of(index: int, example: dict, dataset: Any) -> str:
    """Frame colour of a retrieved image: the query's own image, a same-caption image, or other."""
    if index == example.get("positive_image"):
        return OWN
    captions_at = getattr(dataset, "captions_at", None)
    captions = captions_at(index) if callable(captions_at) else dataset[index].captions
    return SAME_CAPTION if example.get("query") in captions else OTHER


def _thumb(image: Image.Image, size: int) -> np.ndarray:
    """Fit an image into size x size; small ones (8x8 digits, 32 px) grow with crisp pixels."""
    f = size / max(image.size)
    resample = Image.Resampling.NEAREST if f >= 2 else Image.Resampling.BICUBIC
    image = image.convert("RGB").resize((max(1, round(image.width * f)), max(1, round(image.height * f))), resample)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return np.asarray(canvas)  # (size, size, 3)


def retrieval_grid(examples: list[dict], dataset: Any, credit: str | None = None) -> bytes:
    """One row per query: the wrapped query text, then its top images with index and score.

    The thumbnails are pasted into one pixel mosaic shown in a single axes (one axes per
    image would cost a second of drawing per report), and the text is drawn over it.
    """
    k = max(len(ex.get("top_images") or []) for ex in examples)
    frame, gap = 4, 6
    box = THUMB + 2 * frame
    row_h = box + LABEL_H
    left = TEXT_W
    height, width = HEADER_H + len(examples) * row_h, left + k * (box + gap)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)  # (H, W, 3)
    labels = []
    for r, ex in enumerate(examples):
        y = HEADER_H + r * row_h
        scores = ex.get("top_scores") or []
        for c, index in enumerate(ex.get("top_images") or []):
            x = left + c * (box + gap)
            color = mark_of(int(index), ex, dataset)
            pad = frame if color != OTHER else 1
            canvas[y : y + box, x : x + box] = _rgb(color)
            canvas[y + pad : y + box - pad, x + pad : x + box - pad] = 255
            thumb = _thumb(dataset[int(index)].image, THUMB)  # (THUMB, THUMB, 3)
            canvas[y + frame : y + frame + THUMB, x + frame : x + frame + THUMB] = thumb
            score = f" {scores[c]:.3f}" if c < len(scores) else ""
            labels.append((x + box / 2, y + box + 2, f"#{index}{score}"))
    fig = new_figure(width / DPI, (height + (14 if credit else 0)) / DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(0, width), ax.set_ylim(height + (14 if credit else 0), 0)
    ax.axis("off")
    for c in range(k):
        ax.text(left + c * (box + gap) + box / 2, HEADER_H - 4, f"top {c + 1}", ha="center", va="bottom", fontsize=8)
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="top", fontsize=7)
    for r, ex in enumerate(examples):
        query = "\n".join(textwrap.wrap(f"\u201c{ex.get('query', '?')}\u201d", 26)[:4])
        ax.text(4, HEADER_H + r * row_h + box / 2, f"{query}\n\nown image #{ex.get('positive_image')}: {_own_rank(ex)}",
                ha="left", va="center", fontsize=8)
    if credit:
        ax.text(4, height + 12, credit, fontsize=7, color="#444444", va="bottom")
    return to_png(fig, colors=256)


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # "#rrggbb" -> (r, g, b)


def _own_rank(example: dict) -> str:
    top = list(example.get("top_images") or [])
    own = example.get("positive_image")
    return f"rank {top.index(own) + 1}" if own in top else f"not in top {len(top)}"
