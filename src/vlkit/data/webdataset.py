"""``webdataset``: tar shards as open_clip reads them, with the standard ``tarfile`` module.

A sample is the group of tar members sharing a key (the member name up to the first dot of
its file name): ``000123.jpg`` (or png/webp) with ``000123.txt`` (one caption) and/or
``000123.json`` (``{"captions": [...]}`` or ``{"caption": "..."}``, optional ``"label"`` and
``"classname"``) and/or ``000123.cls`` (an integer label). JSON captions win over the txt.

The path is one shard, a folder of shards, a brace pattern (``shards-{000..009}.tar``,
``{a,b}``) or a glob; a ``{split}`` in it is replaced by the split name. Uncompressed shards
are indexed once (member offsets) and read lazily with a seek; compressed shards
(``.tar.gz``) cannot seek, so their images are kept in memory.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .catalog import read_classes, register_dataset
from .dataset import BytesImages, View, VLDataset
from .files import (IMAGE_EXTS, UserOptions, check_caption, content_hash, expand_shards, image_ok,
                    label_view, stat_key, warn_skipped, whole_data_warning)


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


def index_shard(shard: Path) -> list[dict]:
    """Samples of one shard: {key, image reader, image ext, txt/json/cls bytes}, in tar order."""
    seekable = shard.suffix == ".tar"
    samples: dict[str, dict] = {}
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
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"cannot read webdataset shard {shard} ({e}); "
                        "replace the file or drop it from the pattern") from None
    return list(samples.values())


def _captions(s: dict, where: str) -> tuple[list[str], dict]:
    info = {}
    if "json" in s:
        try:
            info = json.loads(s["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{where}.json is not valid JSON ({e}); fix or remove it") from None
        if not isinstance(info, dict):
            info = {}
    caps = info.get("captions") or ([info["caption"]] if "caption" in info else None)
    if caps is not None:
        return [check_caption(c, f"{where}.json") for c in caps], info
    if "txt" in s:
        return [check_caption(s["txt"].decode("utf-8", "replace"), f"{where}.txt line 1")], info
    raise UserError(f"sample {where} has an image but no .txt or .json caption; add one or remove the image")


@register_dataset("webdataset", WebDatasetOptions, views=("label",), splits=("train", "val", "test", "all"),
                  description=read_classes("user")["webdataset"]["description"], needs_path=True)
def load_webdataset(split: str, opts: WebDatasetOptions) -> VLDataset:
    shards = expand_shards(opts.path.replace("{split}", split))
    if "{split}" not in opts.path:
        whole_data_warning("webdataset", opts.path, split)
    readers, names, captions, labels, classnames, meta, skipped = [], [], [], [], {}, [], []
    for shard in shards:
        for s in index_shard(shard):
            if "image" not in s:
                continue  # a caption-only key (open_clip skips these too)
            where = f"{shard}:{s['key']}"
            name = f"{where}.{s['image_ext']}"
            if opts.check_images and not image_ok(s["image"], name, opts.strict):
                skipped.append(name)
                continue
            caps, info = _captions(s, where)
            label = info.get("label", int(s["cls"]) if "cls" in s else None)
            if label is not None and "classname" in info:
                classnames[int(label)] = str(info["classname"])
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
