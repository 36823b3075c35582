"""Write a dataset in a user format, so it loads back through the matching loader.

- ``webdataset``: ``shards-000000.tar``, ... of ``shard_size`` samples; each sample is
  ``KEY.png`` + ``KEY.txt`` (first caption, what open_clip reads) + ``KEY.json``
  (all captions, label and class name of the current view), and ``sizes.json`` (samples per
  shard, as open_clip's ``get_dataset_size`` reads it), so pretraining can stream the shards.
- ``captions``: ``images/KEY.png`` + ``captions.csv``, tab-separated ``filepath``/``title``
  (one row per caption, as open_clip reads it) and a ``label`` column with the class name
  when the current view has class names.
- ``imagefolder``: ``CLASS/KEY.png`` + sidecar ``CLASS/KEY.txt`` (captions, one per line) for
  the current view's classes.

Images are written as PNG (lossless), so a round trip returns the same pixels.

The folder must be empty (or not exist): stale files from an earlier export would load back as
part of this one. ``overwrite=True`` first deletes the files an export writes, recognised by
their names (``shards-NNNNNN.tar``, ``sizes.json``, ``captions.csv``, ``images/NNNNNN.png``,
``CLASS/NNNNNN.png|txt``, and the temp files of an interrupted write), and still refuses a
folder that holds anything else. :func:`export` returns the spec path (a ``str``) carrying
``n_samples`` and ``files``: what was actually written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

from ..errors import UserError, unknown_name
from .dataset import VLDataset
from .store import atomic_write_bytes

FORMATS = ("webdataset", "captions", "imagefolder")


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _classname(ds: VLDataset, label: int) -> str | None:
    names = ds.classnames
    return names[label] if names is not None and 0 <= label < len(names) else None


class Exported(str):
    """The spec path to load an export back (a plain ``str`` to every caller), with what was
    written: ``n_samples`` (samples in the files) and ``files`` (paths relative to the folder)."""

    n_samples: int
    files: list[str]

    def __new__(cls, spec: str, n_samples: int, files: list[str]) -> "Exported":
        out = super().__new__(cls, spec)
        out.n_samples, out.files = n_samples, list(files)
        return out


def export(dataset: VLDataset, fmt: str, out_dir: str | Path, shard_size: int = 1000,
           overwrite: bool = False) -> Exported:
    """Write ``dataset`` to ``out_dir`` as ``fmt``; returns the spec path to load it back
    (a shard pattern, a CSV file or a folder) with ``n_samples`` and ``files`` written.

    ``out_dir`` must be empty or new; ``overwrite=True`` replaces an earlier export there.
    """
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    if fmt == "webdataset" and shard_size < 1:
        raise UserError(f"shard_size must be at least 1, got {shard_size}")
    if fmt == "imagefolder" and dataset.classnames is None:
        raise UserError(f"imagefolder export needs a view with class names; {dataset.name} view {dataset.view!r} "
                        f"has none (views: {', '.join(sorted(dataset.views)) or 'none'}); pick one with with_view()")
    out = Path(out_dir)
    _prepare(out, overwrite)  # after every check: a refused export deletes nothing
    files: list[str] = []
    spec, n_samples = {"webdataset": _webdataset, "captions": _captions, "imagefolder": _imagefolder}[fmt](
        dataset, out, shard_size, files)
    return Exported(spec, n_samples, files)


# What an export writes (and what overwrite=True may delete): relative paths, "/"-separated.
_OWN_FILE = re.compile(r"shards-\d{6}\.tar|sizes\.json|captions\.csv|[^/]+/\d{6}\.(png|txt)|(.+/)?\.[^/]+\.tmp")


def _prepare(out: Path, overwrite: bool) -> None:
    """Make ``out`` an existing, empty folder; with ``overwrite``, empty it of export files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"export target {out} is a file, not a folder; give a folder path (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create export folder {out} ({e.strerror or e}); give a folder you can write") from None
    with os.scandir(out) as it:
        first = next(it, None)
    if first is None:
        return
    if not overwrite:
        raise UserError(f"export folder {out} is not empty (it holds {first.name}); choose an empty folder, "
                        "or pass overwrite=True (--overwrite) to replace an earlier export there")
    own, dirs = [], []
    for root, subdirs, names in os.walk(out):  # links are never followed: a link is a file here
        rel = Path(root).relative_to(out)
        names += [d for d in subdirs if os.path.islink(os.path.join(root, d))]
        dirs += [Path(root) / d for d in subdirs if not os.path.islink(os.path.join(root, d))]
        for name in names:
            if not _OWN_FILE.fullmatch((rel / name).as_posix()):
                raise UserError(f"export folder {out} holds files an export does not write (first: "
                                f"{rel / name}); empty it or choose another folder")
            own.append(Path(root) / name)
    for f in own:
        f.unlink()
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):  # deepest first; all empty now
        d.rmdir()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def _webdataset(ds: VLDataset, out: Path, shard_size: int, files: list[str]) -> tuple[str, int]:
    n_shards = max(1, -(-len(ds) // shard_size))
    now = time.time()
    sizes = {}
    for s in range(n_shards):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * shard_size, min(len(ds), (s + 1) * shard_size)):
                sample, key = ds[i], f"{i:06d}"
                record = {"captions": sample.captions}
                if sample.label >= 0:
                    record["label"] = sample.label
                    if _classname(ds, sample.label) is not None:
                        record["classname"] = _classname(ds, sample.label)
                _add(tar, f"{key}.png", _png(sample.image), now)
                _add(tar, f"{key}.txt", sample.captions[0].encode("utf-8"), now)
                _add(tar, f"{key}.json", json.dumps(record, ensure_ascii=False).encode("utf-8"), now)
        atomic_write_bytes(out / f"shards-{s:06d}.tar", buf.getvalue())
        files.append(f"shards-{s:06d}.tar")
        sizes[f"shards-{s:06d}.tar"] = min(len(ds), (s + 1) * shard_size) - s * shard_size
    atomic_write_bytes(out / "sizes.json", json.dumps(sizes, indent=0).encode("utf-8"))
    files.append("sizes.json")
    last = n_shards - 1
    return str(out / (f"shards-{{000000..{last:06d}}}.tar" if last else "shards-000000.tar")), len(ds)


def _captions(ds: VLDataset, out: Path, shard_size: int, files: list[str]) -> tuple[str, int]:
    (out / "images").mkdir(exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows, delimiter="\t", lineterminator="\n")
    has_names = ds.classnames is not None
    writer.writerow(["filepath", "title"] + (["label"] if has_names else []))
    for i in range(len(ds)):
        sample, rel = ds[i], f"images/{i:06d}.png"
        atomic_write_bytes(out / rel, _png(sample.image))
        files.append(rel)
        extra = [_classname(ds, sample.label) or ""] if has_names else []
        for cap in sample.captions:
            writer.writerow([rel, _one_line(cap)] + extra)
    path = out / "captions.csv"
    atomic_write_bytes(path, rows.getvalue().encode("utf-8"))
    files.append("captions.csv")
    return str(path), len(ds)


def _folder_names(classnames: list[str]) -> list[str]:
    """Class names as safe, unique folder names (the loader reads ``_`` as a space)."""
    out, seen = [], set()
    for i, name in enumerate(classnames):
        safe = re.sub(r"[/\\:*?\"<>|\x00-\x1f]", " ", name).strip().lstrip(".") or f"class {i}"
        if safe.lower() in seen or safe in ("train", "val", "test"):
            safe = f"{safe} {i}"
        seen.add(safe.lower())
        out.append(safe)
    return out


def _imagefolder(ds: VLDataset, out: Path, shard_size: int, files: list[str]) -> tuple[str, int]:
    folders = _folder_names(ds.classnames)
    n = 0
    for i in range(len(ds)):
        sample = ds[i]
        if sample.label < 0:  # no class: no folder to put it in
            continue
        rel = f"{folders[sample.label]}/{i:06d}"
        atomic_write_bytes(out / f"{rel}.png", _png(sample.image))
        text = "\n".join(_one_line(c) for c in sample.captions) + "\n"
        atomic_write_bytes(out / f"{rel}.txt", text.encode("utf-8"))
        files += [f"{rel}.png", f"{rel}.txt"]
        n += 1
    return str(out), n
