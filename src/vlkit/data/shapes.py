"""``shapes``: seeded synthetic scenes for compositional probes.

Each scene holds 1 to ``max_objects`` non-overlapping objects, each with a shape, a color, a
size (small/large) and, when ``textures`` is on, a texture (solid/striped). Captions come from a
small grammar: "a small red circle" for one object, "a small red circle left of a large blue
square" with spatial relations for more. ``meta["objects"]`` keeps every object's attributes,
box and center, ``meta["relations"]`` the (i, j, relation) triples the caption states, so an
evaluator can build swapped-attribute or swapped-relation negatives. Masks are not stored:
:func:`object_masks` redraws them on demand from the meta (small memory).

Compositional split: the color-shape pairs in ``holdout`` (default "red circle", "blue square")
never occur in train or val; in test they occur freely, and ``test_novel_fraction`` of the test
scenes are forced to start with one (``meta["novel"]`` marks scenes holding any held-out pair).

Views label the *first* object of the caption (``shape``, ``color``, ``size``) or the scene
(``count``: class i means i + 1 objects).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ..errors import UserError
from .catalog import read_classes, register_dataset, view_from_file
from .dataset import ArrayImages, VLDataset
from .store import cached_build

BUILD_VERSION = 1
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges at 64 px


@dataclass
class ShapesOptions:
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    textures: bool = False
    holdout: list[str] = field(default_factory=lambda: ["red circle", "blue square"])
    test_novel_fraction: float = 0.2
    seed: int = 0


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(phase + 2 * math.pi * k / n),
                 cy + radius * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]

    if shape == "square":
        return ring(4, r * 1.3, math.pi / 4)
    if shape == "triangle":
        return ring(3, r * 1.2, -math.pi / 2)
    if shape == "diamond":
        return ring(4, r * 1.2, 0)
    if shape == "hexagon":
        return ring(6, r * 1.1, 0)
    if shape == "star":
        outer, inner = ring(5, r * 1.3, -math.pi / 2), ring(5, r * 0.55, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(draw: ImageDraw.ImageDraw, obj: dict, scale: int, fill=None, outline=None) -> None:
    cx, cy, r = (v * scale for v in (obj["cx"], obj["cy"], obj["r"]))
    if obj["shape"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=scale)
    else:
        draw.polygon(_polygon(obj["shape"], cx, cy, r), fill=fill, outline=outline, width=scale)


def _mask(obj: dict, size: int, scale: int = 1) -> Image.Image:
    """Object silhouette as an 'L' image of side ``size * scale``."""
    im = Image.new("L", (size * scale, size * scale), 0)
    _draw_shape(ImageDraw.Draw(im), obj, scale, 255)
    return im


def object_masks(meta: dict, image_size: int) -> np.ndarray:
    """Boolean masks (n_objects, H, W) of a scene, redrawn from ``meta["objects"]``."""
    return np.stack([np.asarray(_mask(o, image_size)) >= 128 for o in meta["objects"]])


@functools.lru_cache(maxsize=4)
def _stripes(side: int, band: int) -> Image.Image:
    """Diagonal bands ``band`` px wide (255 = stripe), as an 'L' mask."""
    yy, xx = np.mgrid[0:side, 0:side]
    return Image.fromarray(np.where(((xx + yy) // band) % 2 == 0, 255, 0).astype(np.uint8))


def draw_scene(objects: list[dict], size: int, colors: dict) -> np.ndarray:
    """The scene as (size, size, 3) uint8: drawn at SUPERSAMPLE x, box-filtered down."""
    side = size * SUPERSAMPLE
    im = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(im)
    for o in objects:
        _draw_shape(draw, o, SUPERSAMPLE, tuple(colors[o["color"]]))
        if o.get("texture") == "striped":
            m = ImageChops.multiply(_mask(o, size, SUPERSAMPLE), _stripes(side, 2 * SUPERSAMPLE))
            im.paste((255, 255, 255), (0, 0), m)
            _draw_shape(draw, o, SUPERSAMPLE, outline=tuple(colors[o["color"]]))  # keep the silhouette
    return np.asarray(im.resize((size, size), Image.Resampling.BOX))


def relation(a: dict, b: dict) -> str:
    """Where ``a`` is relative to ``b`` along the axis where they are further apart."""
    dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def phrase(o: dict, with_size: bool = True) -> str:
    words = [o["size"]] if with_size else []
    if o.get("texture") == "striped":
        words.append("striped")
    return "a " + " ".join(words + [o["color"], o["shape"]])


def describe(objects: list[dict], count_words: list[str]) -> tuple[list[str], list[list]]:
    """Captions of a scene and the relations they state, as [i, j, "left of"] triples."""
    n = len(objects)
    if n == 1:
        o = objects[0]
        alone = f"one {o['size']} {o['color']} {o['shape']} on a white background"
        return [phrase(o), phrase(o, with_size=False), alone], []
    rels = [[0, 1, relation(objects[0], objects[1])]]
    clauses = [f"{phrase(objects[0])} {rels[0][2]} {phrase(objects[1])}"]
    for i in range(2, n):  # later objects are placed relative to the one named before them
        prev = objects[i - 1]
        rels.append([i, i - 1, relation(objects[i], prev)])
        clauses.append(f"{phrase(objects[i])} {rels[-1][2]} the {prev['color']} {prev['shape']}")
    word = count_words[n] if n < len(count_words) else str(n)
    listing = ", ".join(phrase(o) for o in objects[:-1]) + " and " + phrase(objects[-1])
    return [", and ".join(clauses), f"{word} shapes: {listing}", f"a picture of {word} shapes"], rels


def _place(rng: np.random.Generator, attrs: list[dict], size: int, sizes: dict) -> list[dict]:
    """Centers so that the objects' boxes do not overlap (rejection sampling).

    A whole scene is redrawn up to 50 times, turning a large object small every 10 tries;
    objects that still do not fit are dropped (rare: the ``count`` view stays near uniform).
    """
    best: list[dict] = []
    small = min(sizes, key=sizes.get)
    for attempt in range(50):
        placed = []
        for a in attrs:
            r = sizes[a["size"]] * size
            h = r * 1.3 + 1  # half side of a box that holds every shape at radius r
            cx, cy = rng.uniform(h, size - h, size=2)
            gap = [h + p["r"] * 1.3 + 2 for p in placed]  # boxes apart along x or y
            if all(max(abs(cx - p["cx"]), abs(cy - p["cy"])) > g for p, g in zip(placed, gap)):
                placed.append({**a, "cx": round(float(cx), 2), "cy": round(float(cy), 2), "r": round(r, 2)})
        best = max(best, placed, key=len)
        if len(best) == len(attrs):
            break
        if attempt % 10 == 9:  # crowded: make a large object small and keep trying
            large = [a for a in attrs if a["size"] != small]
            if large:
                large[0]["size"] = small
    for p in best:
        h = p["r"] * 1.3
        p["box"] = [round(max(0, p["cx"] - h), 1), round(max(0, p["cy"] - h), 1),
                    round(min(size, p["cx"] + h), 1), round(min(size, p["cy"] + h), 1)]
    return best


def _scene(rng, opts: ShapesOptions, vocab: dict, banned: set, forced: tuple | None) -> list[dict]:
    """Attributes of 1..max_objects objects, distinct color-shape pairs (so "the blue square"
    names one object), then their positions."""
    n = int(rng.integers(opts.min_objects, opts.max_objects + 1))
    attrs, used = [], set(banned)
    for k in range(n):
        while True:
            color = str(rng.choice(list(vocab["colors"])))
            shape = str(rng.choice(vocab["shapes"]))
            if k == 0 and forced:
                color, shape = forced
            if (color, shape) not in used:
                break
        used.add((color, shape))
        texture = str(rng.choice(["solid", "striped"])) if opts.textures else "solid"
        size = str(rng.choice(list(vocab["sizes"])))
        attrs.append({"shape": shape, "color": color, "size": size, "texture": texture})
    return _place(rng, attrs, opts.image_size, vocab["sizes"])


def _holdout_pairs(opts: ShapesOptions, vocab: dict) -> list[tuple[str, str]]:
    pairs = []
    for text in opts.holdout:
        parts = str(text).split()
        if len(parts) != 2 or parts[0] not in vocab["colors"] or parts[1] not in vocab["shapes"]:
            raise UserError(f"shapes.holdout entry {text!r} is not 'COLOR SHAPE'; colors: "
                            f"{', '.join(vocab['colors'])}; shapes: {', '.join(vocab['shapes'])}")
        pairs.append((parts[0], parts[1]))
    return pairs


def _build(opts: ShapesOptions, vocab: dict):
    pairs = _holdout_pairs(opts, vocab)
    images, records = [], []
    for split, n in (("train", opts.n_train), ("val", opts.n_val), ("test", opts.n_test)):
        digest = hashlib.sha256(f"shapes:{opts.seed}:{split}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        for i in range(n):
            novel_slot = split == "test" and pairs and i < round(opts.test_novel_fraction * n)
            forced = pairs[i % len(pairs)] if novel_slot else None
            objs = _scene(rng, opts, vocab, set() if split == "test" else set(pairs), forced)
            captions, rels = describe(objs, vocab["count_words"])
            images.append(draw_scene(objs, opts.image_size, {k: tuple(v) for k, v in vocab["colors"].items()}))
            novel = any((o["color"], o["shape"]) in pairs for o in objs)
            records.append({"split": split, "objects": objs, "relations": rels, "captions": captions, "novel": novel})
    return np.stack(images), records, {"holdout": [" ".join(p) for p in pairs]}


@register_dataset("shapes", ShapesOptions, views=("shape", "color", "size", "count"),
                  splits=("train", "val", "test"), default_view="shape")
def load_shapes(split: str, opts: ShapesOptions) -> VLDataset:
    if not 1 <= opts.min_objects <= opts.max_objects <= 6:
        raise UserError("shapes needs 1 <= min_objects <= max_objects <= 6, "
                        f"got {opts.min_objects}..{opts.max_objects}")
    if opts.image_size < 16:
        raise UserError(f"shapes.image_size must be at least 16, got {opts.image_size}")
    cls = read_classes("shapes")
    vocab = {k: cls[k] for k in ("shapes", "colors", "sizes", "count_words")}
    params = {"v": BUILD_VERSION, **{k: getattr(opts, k) for k in ShapesOptions.__dataclass_fields__}, "vocab": vocab}
    built = cached_build("shapes", params, lambda: _build(opts, vocab))
    idx = np.array([i for i, r in enumerate(built.records) if r["split"] == split], dtype=np.int64)
    recs = [built.records[i] for i in idx]
    colors, sizes = list(vocab["colors"]), list(vocab["sizes"])
    labels = {
        "shape": np.array([vocab["shapes"].index(r["objects"][0]["shape"]) for r in recs]),
        "color": np.array([colors.index(r["objects"][0]["color"]) for r in recs]),
        "size": np.array([sizes.index(r["objects"][0]["size"]) for r in recs]),
        "count": np.array([len(r["objects"]) - 1 for r in recs]),
    }
    counts = [vocab["count_words"][k] for k in range(1, opts.max_objects + 1)]
    names = {"shape": vocab["shapes"], "color": colors, "size": sizes, "count": counts}
    views = {v: view_from_file(cls["views"][v], names[v]) for v in names}
    captions = [r["captions"] for r in recs]
    meta = [{"objects": r["objects"], "relations": r["relations"], "novel": r["novel"],
             "holdout": built.info["holdout"], "image_size": opts.image_size} for r in recs]
    return VLDataset("shapes", split, ArrayImages(built.images[idx]), captions, labels, meta, views, None,
                     f"shapes:{built.content_id}", info=built.info)
