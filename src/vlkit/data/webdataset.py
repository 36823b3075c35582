"""``webdataset``: tar shards as open_clip reads them, with the standard ``tarfile`` module.

A sample is the group of tar members sharing a key (the member name up to the first dot of
its file name): ``000123.jpg`` (or png/webp) with ``000123.txt`` (one caption) and/or
``000123.json`` (``{"captions": [...]}`` or ``{"caption": "..."}``, optional ``"label"`` and
``"classname"``) and/or ``000123.cls`` (an integer label). JSON captions win over the txt.
A caption field is a string (one caption) or a list of strings; a label a class index or a
class name; a ``.cls`` one integer; anything else is refused in one line naming shard and key.

A truncated shard (the copy or download stopped early) is read up to the cut, less the sample
that was being read there (it may be missing members), with one warning line naming the shard
and the number of samples read; ``strict=True`` makes it an error.

The path is one shard, a folder of shards, a brace pattern (``shards-{000..009}.tar``,
``{a,b}``) or a glob; a ``{split}`` in it is replaced by the split name. Uncompressed shards
are indexed once (member offsets) and read lazily with a seek; compressed shards
(``.tar.gz``) cannot seek, so their images are kept in memory. Pretraining streams shards
instead, without indexing them first (:mod:`vlkit.data.stream`, docs/data.md).
"""

from __future__ import annotations

import json
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .catalog import read_classes, register_dataset
from .dataset import BytesImages, View, VLDataset
from .files import (IMAGE_EXTS, UserOptions, caption_list, check_caption, check_label, content_hash,
                    expand_shards, image_ok, json_kind, label_view, stat_key, warn_skipped,
                    whole_data_warning)


@dataclass
class WebDatasetOptions(UserOptions):
    pass


def split_key(name: str) -> tuple[str, str]:
    """``"dir/000123.seg.png"`` -> ("dir/000123", "seg.png"): the key ends at the first dot of
    the file name (the webdataset convention)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


class MemberReader:
    """Reads one member of an uncompressed tar by offset (picklable, for DataLoader workers)."""

    def __init__(self, shard: Path, offset: int, size: int):
        self.shard, self.offset, self.size = shard, offset, size

    def __call__(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


class BytesReader:
    def __init__(self, data: bytes):
        self.data = data

    def __call__(self) -> bytes:
        return self.data


def index_shard(shard: Path, strict: bool = False) -> list[dict]:
    """Samples of one shard: {key, image reader, image ext, txt/json/cls bytes}, in tar order.

    A truncated shard gives the samples before the cut with a warning (``strict``: UserError).
    """
    seekable = shard.suffix == ".tar"
    samples: dict[str, dict] = {}
    cut = None  # why the shard ended early, if it did
    try:
        with tarfile.open(shard, "r:" if seekable else "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = split_key(m.name)
                s = samples.setdefault(key, {"key": key})
                if "." + ext in IMAGE_EXTS and "image" not in s:
                    s["image_ext"] = ext
                    if seekable:
                        s["image"] = MemberReader(shard, m.offset_data, m.size)
                    else:
                        s["image"] = BytesReader(tar.extractfile(m).read())
                elif ext in ("txt", "json", "cls"):
                    s[ext] = tar.extractfile(m).read()
            if seekable and not _ends_cleanly(shard, tar.offset):
                cut = "no end-of-archive marker"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        if not samples:
            raise UserError(f"cannot read webdataset shard {shard} ({e}); "
                            "replace the file or drop it from the pattern") from None
        cut = " ".join(str(e).split()) or type(e).__name__
    if cut is not None:
        samples.pop(next(reversed(samples)))  # the sample being read at the cut may lack members
        n = sum("image" in s for s in samples.values())
        what = f"webdataset shard {shard} is truncated ({cut}): read {n} sample{'s' * (n != 1)} before the cut"
        if strict:
            raise UserError(f"{what}; re-copy the shard, or drop strict=True to use those samples")
        warnings.warn(f"vlkit: {what}; re-copy the shard (strict=True makes this an error)", stacklevel=3)
    return list(samples.values())


def _ends_cleanly(shard: Path, offset: int) -> bool:
    """Whether the tar holds a zero end-of-archive block where its members stopped (else it was
    cut short: tarfile silently stops at a truncated or garbled header)."""
    with open(shard, "rb") as f:
        f.seek(offset)
        block = f.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0")


def _captions(s: dict, where: str) -> tuple[list[str], dict]:
    info = {}
    if "json" in s:
        try:
            info = json.loads(s["json"].decode("utf-8"))
        except ValueError as e:  # not UTF-8, not JSON, or an integer of more than 4,300 digits
            raise UserError(f"{where}.json is not valid JSON ({' '.join(str(e).split())}); fix or remove it") from None
        if not isinstance(info, dict):
            info = {}
    for key in ("captions", "caption"):
        if info.get(key) not in (None, "", []):
            return caption_list(info[key], f"{where}.json", key), info
    if "txt" in s:
        return [check_caption(s["txt"].decode("utf-8", "replace"), f"{where}.txt line 1")], info
    raise UserError(f"sample {where} has an image but no .txt or .json caption; add one or remove the image")


def _label(s: dict, info: dict, where: str) -> int | str | None:
    """The sample's label: the JSON ``label`` (a class index or name), else the ``.cls`` integer."""
    if "label" in info:
        return check_label(info["label"], f"{where}.json")
    if "cls" not in s:
        return None
    text = s["cls"].decode("utf-8", "replace").strip()
    if not text.isascii() or not text.isdigit():
        shown = repr(text[:20]) + ("..." if len(text) > 20 else "")
        raise UserError(f"{where}.cls holds {shown}, not a class index; write one non-negative integer, e.g. 3")
    return check_label(text, f"{where}.cls")


@register_dataset("webdataset", WebDatasetOptions, views=("label",), splits=("train", "val", "test", "all"),
                  description=read_classes("user")["webdataset"]["description"], needs_path=True)
def load_webdataset(split: str, opts: WebDatasetOptions) -> VLDataset:
    shards = expand_shards(opts.path.replace("{split}", split))
    if "{split}" not in opts.path:
        whole_data_warning("webdataset", opts.path, split)
    readers, names, captions, labels, classnames, meta, skipped = [], [], [], [], {}, [], []
    for shard in shards:
        for s in index_shard(shard, opts.strict):
            if "image" not in s:
                continue  # a caption-only key (open_clip skips these too)
            where = f"{shard}:{s['key']}"
            name = f"{where}.{s['image_ext']}"
            if opts.check_images and not image_ok(s["image"], name, opts.strict):
                skipped.append(name)
                continue
            caps, info = _captions(s, where)
            label = _label(s, info, where)
            name_ = info.get("classname")
            if name_ is not None and not isinstance(name_, str):
                raise UserError(f"'classname' at {where}.json is {json_kind(name_)}; write the class name as a string")
            if isinstance(label, int) and name_ and name_.strip():
                classnames[label] = name_.strip()
            readers.append(s["image"])
            names.append(name)
            captions.append(caps)
            labels.append(label)
            meta.append({"shard": str(shard), "key": s["key"]})
    warn_skipped(f"webdataset {opts.path}", skipped)
    if not readers:
        raise UserError(f"webdataset {opts.path} holds no readable image samples")
    templates = list(opts.templates) or list(read_classes("user")["templates"])
    lab = label_view(labels, templates)
    views = {}
    if lab is not None:
        n_cls = int(max(lab[0].max(), max(classnames, default=-1))) + 1
        names_ = tuple(classnames.get(i, str(i)) for i in range(n_cls)) if classnames else lab[1].classnames
        views["label"] = View(names_, lab[1].templates, flip_safe=opts.flip_safe)
    cid = content_hash("webdataset", [stat_key(p) for p in shards], names, captions, labels)
    return VLDataset("webdataset", split, BytesImages(readers, names), captions,
                     {"label": lab[0]} if lab else {}, meta, views, "label" if lab else None, cid,
                     info={"path": opts.path, "shards": [str(p) for p in shards], "skipped": skipped})
