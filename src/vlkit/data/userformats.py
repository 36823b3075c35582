"""User datasets from disk: ``imagefolder`` and ``captions`` (CSV/TSV or JSONL).

``imagefolder=/data/pets``: one folder per class (``/data/pets/golden_retriever/x.jpg``),
optionally under ``train/``, ``val/``, ``test/``. Class names are folder names with ``_`` read as
spaces. A sidecar ``x.txt`` next to an image gives its captions (one per line); otherwise the
captions are the prompt templates filled with the class name.

``captions=/data/train.csv``: the columns ``filepath`` and ``title`` as open_clip reads them
(tab-separated unless the header has no tab, then comma), or ``.jsonl`` lines with ``image`` and
``caption`` (a string) or ``captions`` (a list). Image paths are relative to the file and
must stay inside its folder (no absolute paths, no ``..`` out of it) unless
``allow_outside=true``: a captions file from elsewhere cannot make a run read arbitrary files.
Rows naming the same image are one sample with several captions. An optional ``label``
column/key gives a ``label`` view. A ``{split}`` in the path is replaced by the split name.

Bad input follows :mod:`vlkit.data.files`: unreadable images skipped and counted; empty
captions, captions or labels of the wrong type, image paths that are not strings or leave the
folder, and files that are not UTF-8 refused with file and line; missing paths named.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError, missing_file
from .catalog import read_classes, register_dataset
from .dataset import BytesImages, View, VLDataset
from .files import (IMAGE_EXTS, UserOptions, caption_list, check_label, content_hash, decode_text,
                    file_reader, image_ok, json_kind, label_view, split_folder, stat_key, warn_skipped,
                    whole_data_warning)


@dataclass
class ImageFolderOptions(UserOptions):
    pass


@dataclass
class CaptionsOptions(UserOptions):
    image_key: str = "filepath"  # column / JSON key of the image path ("image" also accepted)
    caption_key: str = "title"  # column / JSON key of the caption ("caption", "captions" too)
    label_key: str = "label"
    sep: str = ""  # CSV separator; empty: tab if the header holds one, else comma
    allow_outside: bool = False  # allow image paths outside the file's folder (absolute, or ../)


def _templates(opts: UserOptions) -> list[str]:
    return list(opts.templates) or list(read_classes("user")["templates"])


def _read_sidecar(path: Path) -> list[str] | None:
    side = path.with_suffix(".txt")
    if not side.is_file():
        return None
    lines = decode_text(side.read_bytes(), f"caption file {side}").splitlines()
    caps = [line.strip() for line in lines if line.strip()]
    if not caps:
        raise UserError(f"empty caption at {side} line 1; write a caption there or delete the file")
    return caps


@register_dataset("imagefolder", ImageFolderOptions, views=("class",), splits=("train", "val", "test", "all"),
                  default_view="class", description=read_classes("user")["imagefolder"]["description"],
                  needs_path=True)
def load_imagefolder(split: str, opts: ImageFolderOptions) -> VLDataset:
    root = Path(opts.path).expanduser()
    if not root.is_dir():
        raise missing_file(root, "image folder", "give a folder that holds one folder per class")
    folder, separated = split_folder(root, split)
    if not separated:
        whole_data_warning("image folder", root, split)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"image folder {folder} holds no class folders; put images in {folder}/CLASS_NAME/")
    names = [c.replace("_", " ") for c in classes]
    templates = _templates(opts)
    paths, captions, labels, skipped = [], [], [], []
    for label, (cls_dir, name) in enumerate(zip(classes, names)):
        for p in sorted((folder / cls_dir).rglob("*")):
            if p.suffix.lower() not in IMAGE_EXTS or not p.is_file():
                continue
            if opts.check_images and not image_ok(file_reader(p), str(p), opts.strict):
                skipped.append(str(p))
                continue
            paths.append(p)
            captions.append(_read_sidecar(p) or [t.format(name) for t in templates])
            labels.append(label)
    warn_skipped(f"imagefolder {folder}", skipped)
    if not paths:
        raise UserError(f"image folder {folder} holds no readable images ({', '.join(IMAGE_EXTS)})")
    meta = [{"path": str(p), "class_folder": p.relative_to(folder).parts[0]} for p in paths]
    views = {"class": View(tuple(names), tuple(templates), flip_safe=opts.flip_safe)}
    cid = content_hash("imagefolder", [stat_key(p) for p in paths], captions, labels)
    return VLDataset("imagefolder", split, BytesImages([file_reader(p) for p in paths], [str(p) for p in paths]),
                     captions, {"class": np.array(labels)}, meta, views, None, cid,
                     info={"path": str(folder), "skipped": skipped})


def _rows_csv(path: Path, opts: CaptionsOptions):
    """(line number, row dict) of a CSV/TSV; the separator as open_clip writes it (tab) or comma."""
    text = decode_text(path.read_bytes(), f"captions file {path}")
    header = text.split("\n", 1)[0]
    sep = opts.sep or ("\t" if "\t" in header else ",")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num} is not valid CSV ({e}); fix that line") from None


def _rows_jsonl(path: Path):
    text = decode_text(path.read_bytes(), f"captions file {path}")
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:  # JSONDecodeError, or an integer of more than 4,300 digits
            raise UserError(f"{path} line {n} is not valid JSON ({getattr(e, 'msg', e)}); fix that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {n} is {json_kind(row)}, not a JSON object; "
                            'write one object per line, e.g. {"image": "img/0.png", "caption": "..."}')
        yield n, row


def _pick(row: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in row:
            return k, row[k]
    return None, None


def _image_path(value, where: str, folder: Path, allow_outside: bool) -> str:
    """The image path of one row, checked: a non-empty string that stays in ``folder``."""
    if not isinstance(value, str):
        raise UserError(f"image path at {where} is {json_kind(value)}; write a path string, "
                        'e.g. "img/0.png" (relative to the file)')
    if "\x00" in value:
        raise UserError(f"image path at {where} holds a NUL character; write a plain file path")
    if not allow_outside and (os.path.isabs(value) or os.path.normpath(value).split(os.sep)[0] == ".."):
        raise UserError(f"image path {value!r} at {where} points outside {folder}; write paths relative to "
                        "the file's folder, or pass allow_outside=true to read images anywhere")
    return value


def read_caption_rows(path: Path, opts: CaptionsOptions) -> tuple[list[str], list[list[str]], list]:
    """Image paths (as written), captions per image, and labels, grouped by image in file order."""
    rows = _rows_jsonl(path) if path.suffix.lower() in (".jsonl", ".json") else _rows_csv(path, opts)
    order: dict[str, int] = {}
    caps: list[list[str]] = []
    labels: list = []
    for n, row in rows:
        where = f"{path} line {n}"
        _, image = _pick(row, (opts.image_key, "filepath", "image", "image_path"))
        if image is None or image == "":
            raise UserError(f"no image path at {where}; give a {opts.image_key!r} column/key")
        image = _image_path(image, where, path.parent, opts.allow_outside)
        key, cap = _pick(row, (opts.caption_key, "title", "caption", "captions", "text"))
        if key is None:
            raise UserError(f"no caption at {where}; give a {opts.caption_key!r} column/key")
        texts = caption_list(cap, where, key)
        label = check_label(row.get(opts.label_key), where)
        if image not in order:
            order[image] = len(caps)
            caps.append([])
            labels.append(label)
        caps[order[image]] += [t for t in texts if t not in caps[order[image]]]
    return list(order), caps, labels


@register_dataset("captions", CaptionsOptions, views=("label",), splits=("train", "val", "test", "all"),
                  description=read_classes("user")["captions"]["description"], needs_path=True)
def load_captions(split: str, opts: CaptionsOptions) -> VLDataset:
    raw = opts.path.replace("{split}", split)
    path = Path(raw).expanduser()
    if not path.is_file():
        raise missing_file(path, "captions file", "give a .csv/.tsv (filepath, title) or .jsonl (image, caption)")
    if "{split}" not in opts.path:
        whole_data_warning("captions file", path, split)
    images, caps, labels = read_caption_rows(path, opts)
    keep, skipped = [], []
    for i, rel in enumerate(images):
        p = (path.parent / rel).expanduser()
        ok = os.path.isfile(p) and (not opts.check_images or image_ok(file_reader(p), str(p), opts.strict))
        if not ok and opts.strict:
            raise missing_file(p, f"image listed in {path}")
        (keep if ok else skipped).append(i if ok else str(p))
    warn_skipped(f"captions {path}", skipped)
    if not keep:
        raise UserError(f"captions file {path} lists no readable images")
    paths = [path.parent / images[i] for i in keep]
    captions = [caps[i] for i in keep]
    lab = label_view([labels[i] for i in keep], _templates(opts))
    label_cols = {"label": lab[0]} if lab else {}
    views = {"label": dataclasses.replace(lab[1], flip_safe=opts.flip_safe)} if lab else {}
    meta = [{"path": str(p), "filepath": images[i]} for p, i in zip(paths, keep)]
    cid = content_hash("captions", [stat_key(p) for p in paths], captions, [labels[i] for i in keep])
    return VLDataset("captions", split, BytesImages([file_reader(p) for p in paths], [str(p) for p in paths]),
                     captions, label_cols, meta, views, "label" if lab else None, cid,
                     info={"path": str(path), "skipped": skipped})
