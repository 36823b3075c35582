"""What the standard benchmark datasets read from local copies share (:mod:`.coop`,
:mod:`.clipbench`): finding the dataset folder, the one-line "not found" naming the expected
layout, safe relative image paths, and building a labelled :class:`VLDataset` from image paths.

These datasets cannot be downloaded by vlkit (no network at run time): the user points
``path`` at the folder that holds the dataset's folder (CoOp's ``$DATA``) or at the dataset's
folder itself. Images are read lazily; ``check_images=true`` opens every image header at load
(slow on ImageNet-sized data, so off by default here).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from .dataset import BytesImages, View, VLDataset
from .files import IMAGE_EXTS, content_hash, file_reader, image_ok, json_kind, stat_key, warn_skipped


@dataclass
class StandardOptions:
    """Options of a standard dataset read from a local copy."""

    path: str = ""  # the folder holding the dataset's folder ($DATA), or the dataset's folder itself
    check_images: bool = False  # open every image header at load (skip unreadable ones, counted)
    strict: bool = False  # with check_images: raise on the first unreadable image instead
    templates: list[str] = field(default_factory=list)  # prompt templates; default: the paper's


def check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; valid: {', '.join(splits)}")


def find_root(path: str, folder: str, markers: Sequence[str], name: str, layout: str) -> Path:
    """The dataset folder: ``path/folder`` if it holds every marker, else ``path`` itself if it
    does; otherwise one line naming the expected layout."""
    base = Path(path).expanduser()
    for cand in (base / folder, base):
        if all((cand / m).exists() for m in markers):
            return cand
    where = base / folder if folder and base.name != folder else base
    missing = next(m for m in markers if not (where / m).exists())
    if not folder:
        raise UserError(f"{name} not found: {where / missing} is missing; expected the layout {layout} "
                        "in the folder given as the path")
    raise UserError(f"{name} not found: {where / missing} is missing; expected the layout {layout} "
                    f"under {where.parent}; pass the folder that holds {folder}/ (or {folder}/ itself) as the path")


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid UTF-8 JSON ({' '.join(str(e).split())[:120]}); "
                        "replace it with the original file") from None


def inside(rel: object, where: str, folder: Path) -> str:
    """A relative image path that stays inside ``folder`` (a split file cannot point elsewhere)."""
    if not isinstance(rel, str) or not rel:
        raise UserError(f"image path at {where} is {json_kind(rel)}; expected a path relative to {folder}")
    if "\x00" in rel or os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
        raise UserError(f"image path {rel!r} at {where} points outside {folder}; "
                        "this file is not the dataset's original split file")
    return rel


def clean_name(name: str) -> str:
    """A class name as the prompt learners write it: ``_`` read as a space."""
    return name.replace("_", " ").strip()


def class_folders(folder: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Image files of ``folder/<class>/`` (sorted by name) and their labels (class positions)."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        sub = folder / cls
        with os.scandir(sub) as it:
            names = sorted(e.name for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_EXTS)
        paths += [sub / n for n in names]
        labels += [label] * len(names)
    return paths, labels


def _readable(name: str, split: str, paths: list[Path], column: list, opts: StandardOptions,
              source: Path) -> tuple[list[Path], list, list[str]]:
    """Paths and a parallel column without unreadable images (``check_images``), checked non-empty."""
    skipped: list[str] = []
    if opts.check_images:
        keep = [i for i, p in enumerate(paths) if image_ok(file_reader(p), str(p), opts.strict)]
        skipped = [str(paths[i]) for i in sorted(set(range(len(paths))) - set(keep))]
        paths, column = [paths[i] for i in keep], [column[i] for i in keep]
        warn_skipped(f"{name} {split}", skipped)
    if not paths:
        raise UserError(f"{name} split {split!r} at {source} lists no images")
    if not paths[0].is_file():  # a wrong image folder shows at once, not at the first batch
        raise UserError(f"{name}: image {paths[0]} (the first of split {split!r}) not found; "
                        "check that the images were extracted where the layout puts them")
    return paths, column, skipped


def _dataset(name: str, split: str, paths: list[Path], captions: list, labels: dict, views: dict,
             source: Path, meta_key: Path, skipped: list[str], identity) -> VLDataset:
    """The VLDataset; its content id hashes ``source``'s stat, the paths and ``identity``."""
    prefix = str(meta_key) + os.sep
    names = [str(p) for p in paths]
    rel = [n[len(prefix):] if n.startswith(prefix) else n for n in names]  # (str ops: ImageNet has 1.3M)
    cid = content_hash(name, split, stat_key(source), rel, identity)
    return VLDataset(name, split, BytesImages([file_reader(p) for p in paths], names), captions, labels,
                     [{"path": r} for r in rel], views, "class" if views else None, cid,
                     info={"path": str(source), "skipped": skipped})


def classification(name: str, split: str, paths: Sequence[Path], labels: Sequence[int],
                   classnames: Sequence[str], templates: Sequence[str], opts: StandardOptions,
                   source: Path, meta_key: Path) -> VLDataset:
    """A VLDataset of image files with one ``class`` view; captions are the filled templates.

    ``source`` is the file whose stat (with the paths, labels, class names and templates)
    identifies the content; ``meta_key`` the folder that sample paths in ``meta`` are relative to.
    """
    templates = list(opts.templates) or list(templates)
    paths, labels, skipped = _readable(name, split, list(paths), list(labels), opts, source)
    per_class = [[t.format(c) for t in templates] for c in classnames]  # shared: 80 prompts x 1.3M images
    views = {"class": View(tuple(classnames), tuple(templates))}
    return _dataset(name, split, paths, [per_class[y] for y in labels], {"class": np.asarray(labels, dtype=np.int64)},
                    views, source, meta_key, skipped, (labels, classnames, templates))


def captioned(name: str, split: str, paths: Sequence[Path], captions: Sequence[list[str]],
              opts: StandardOptions, source: Path, meta_key: Path) -> VLDataset:
    """A VLDataset of image files with their captions and no labelled view (retrieval data)."""
    paths, captions, skipped = _readable(name, split, list(paths), list(captions), opts, source)
    return _dataset(name, split, paths, captions, {}, {}, source, meta_key, skipped, captions)
