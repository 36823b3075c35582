"""Write a dataset in a user format, so it loads back through the matching loader.

- ``webdataset``: ``shards-000000.tar``, ... of ``shard_size`` samples; each sample is
  ``KEY.png`` + ``KEY.txt`` (first caption, what open_clip reads) + ``KEY.json``
  (all captions, label and class name of the current view).
- ``captions``: ``images/KEY.png`` + ``captions.csv``, tab-separated ``filepath``/``title``
  (one row per caption, as open_clip reads it) and a ``label`` column with the class name
  when the current view has class names.
- ``imagefolder``: ``CLASS/KEY.png`` + sidecar ``CLASS/KEY.txt`` (captions, one per line) for
  the current view's classes.

Images are written as PNG (lossless), so a round trip returns the same pixels.
"""

from __future__ import annotations

import csv
import io
import json
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


def export(dataset: VLDataset, fmt: str, out_dir: str | Path, shard_size: int = 1000) -> str:
    """Write ``dataset`` to ``out_dir`` as ``fmt``; returns the spec path to load it back
    (a shard pattern, a CSV file or a folder)."""
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"webdataset": _webdataset, "captions": _captions, "imagefolder": _imagefolder}[fmt](
        dataset, out, shard_size)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def _webdataset(ds: VLDataset, out: Path, shard_size: int) -> str:
    if shard_size < 1:
        raise UserError(f"shard_size must be at least 1, got {shard_size}")
    n_shards = max(1, -(-len(ds) // shard_size))
    now = time.time()
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
    last = n_shards - 1
    return str(out / (f"shards-{{000000..{last:06d}}}.tar" if last else "shards-000000.tar"))


def _captions(ds: VLDataset, out: Path, shard_size: int) -> str:
    (out / "images").mkdir(exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows, delimiter="\t", lineterminator="\n")
    has_names = ds.classnames is not None
    writer.writerow(["filepath", "title"] + (["label"] if has_names else []))
    for i in range(len(ds)):
        sample, rel = ds[i], f"images/{i:06d}.png"
        atomic_write_bytes(out / rel, _png(sample.image))
        extra = [_classname(ds, sample.label) or ""] if has_names else []
        for cap in sample.captions:
            writer.writerow([rel, _one_line(cap)] + extra)
    path = out / "captions.csv"
    atomic_write_bytes(path, rows.getvalue().encode("utf-8"))
    return str(path)


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


def _imagefolder(ds: VLDataset, out: Path, shard_size: int) -> str:
    if ds.classnames is None:
        raise UserError(f"imagefolder export needs a view with class names; {ds.name} view {ds.view!r} "
                        f"has none (views: {', '.join(sorted(ds.views)) or 'none'}); pick one with with_view()")
    folders = _folder_names(ds.classnames)
    for i in range(len(ds)):
        sample = ds[i]
        if sample.label < 0:
            continue
        folder = out / folders[sample.label]
        atomic_write_bytes(folder / f"{i:06d}.png", _png(sample.image))
        text = "\n".join(_one_line(c) for c in sample.captions) + "\n"
        atomic_write_bytes(folder / f"{i:06d}.txt", text.encode("utf-8"))
    return str(out)
