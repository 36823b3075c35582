"""The on-disk cache of built datasets: one uint8 image array, JSON records, a hash manifest.

Embedded datasets are built from installed packages the first time they are asked for and
kept under ``vlkit.paths.cache_dir("data", NAME, KEY)``, where KEY hashes the build options and
the builder's version. ``manifest.json`` lists the sha256 of each file; every load checks
them, and a missing or damaged file (an interrupted build, a disk error, a hand edit) makes
the dataset rebuild with one warning line instead of handing wrong data to a run.

Files are written to temporary names and moved into place with ``os.replace``, manifest last,
so a crash never leaves a manifest that vouches for half-written data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..paths import cache_dir

IMAGES, RECORDS, MANIFEST = "images.npz", "records.json", "manifest.json"

# folder -> (file stats, Built): one hash check per process unless the files change on disk.
_MEMO: dict[Path, tuple[tuple, "Built"]] = {}


@dataclass
class Built:
    """A built dataset: images (N, H, W, 3) uint8, one record per image, build facts."""

    images: np.ndarray
    records: list[dict]
    info: dict[str, Any]
    content_id: str  # sha256 over the stored files: identical data, identical id


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def options_key(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


def _write(folder: Path, images: np.ndarray, records: list[dict], info: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".images.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, images=np.ascontiguousarray(images))
        os.replace(tmp, folder / IMAGES)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(folder / RECORDS, records)
    files = {f: sha256_file(folder / f) for f in (IMAGES, RECORDS)}
    atomic_write_json(folder / MANIFEST, {"files": files, "info": info})


def _read(folder: Path) -> Built | None:
    """The stored dataset, or None with the reason warned when it is missing or damaged."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        for name in (IMAGES, RECORDS):
            if not (folder / name).is_file() or sha256_file(folder / name) != files[name]:
                raise ValueError(f"{name} is missing or its sha256 does not match the manifest")
        with np.load(folder / IMAGES, allow_pickle=False) as z:
            images = z["images"]
        records = json.loads((folder / RECORDS).read_text(encoding="utf-8"))
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
        warnings.warn(f"vlkit: cached dataset in {folder} is damaged ({e}); rebuilding it", stacklevel=3)
        return None
    content_id = hashlib.sha256((files[IMAGES] + files[RECORDS]).encode()).hexdigest()
    return Built(images, records, manifest.get("info", {}), content_id)


def cached_build(
    name: str,
    params: dict,
    build: Callable[[], tuple[np.ndarray, list[dict], dict]],
) -> Built:
    """Read dataset ``name`` built with ``params`` from the cache, building it when needed.

    ``build()`` returns (images, records, info); ``info`` gets ``build_seconds`` added and is
    kept in the manifest (counts such as skipped glyphs are reported from there).
    """
    folder = cache_dir("data", name, options_key(params))
    memo = _MEMO.get(folder)
    if memo is not None and memo[0] == _stats(folder):
        return memo[1]
    got = _read(folder)
    if got is not None:
        _MEMO[folder] = (_stats(folder), got)
        return got
    t0 = time.perf_counter()
    images, records, info = build()
    if len(images) != len(records):
        raise ValueError(f"{name}: builder returned {len(images)} images and {len(records)} records")
    info = {**info, "params": params, "build_seconds": round(time.perf_counter() - t0, 3)}
    _write(folder, images, records, info)
    got = _read(folder)
    assert got is not None, f"{folder}: just-written dataset failed its own check"
    _MEMO[folder] = (_stats(folder), got)
    return got


def _stats(folder: Path) -> tuple:
    out = []
    for name in (IMAGES, RECORDS, MANIFEST):
        try:
            st = (folder / name).stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)
