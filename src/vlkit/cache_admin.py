"""What vlkit keeps in its user cache, a size cap on the feature cache, and clearing it.

The cache (``$VLKIT_CACHE``, else the platform's user cache folder, :mod:`vlkit.paths`) holds

- ``features/``: frozen-tower features (:class:`vlkit.data.cache.FeatureCache`) and, under
  ``features/adapt/``, the adaptation view banks. Only a faster way to get what the towers
  compute: safe to delete at any time, and capped in size;
- ``data/``: the embedded datasets, built once from the installed packages (with their sha256
  manifests). Not capped (they are what the runs read); ``vlkit cache clear data`` deletes
  them and the next run builds them again.

**The cap.** After each feature-cache write, :func:`enforce_cap` deletes the least recently
used feature files (oldest modification time; a disk hit touches its file) until the folder
holds at most ``$VLKIT_FEATURE_CACHE_GB`` gigabytes (default :data:`DEFAULT_CAP_GB`; 0 turns
the cap off). The file just written is never evicted, so one entry larger than the cap still
works. Temporary files of killed writes (``.*.tmp``, older than an hour) go too.

``vlkit cache info`` prints the sizes, ``vlkit cache clear [features|data|all]`` deletes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import UserError
from .paths import cache_dir

DEFAULT_CAP_GB = 4.0
CAP_ENV = "VLKIT_FEATURE_CACHE_GB"
SECTIONS = ("features", "data")
_STALE_TMP_S = 3600  # a temporary file this old belongs to a write that was killed


def cap_bytes() -> int | None:
    """The feature cache's cap in bytes (None: no cap), from ``$VLKIT_FEATURE_CACHE_GB``."""
    raw = os.environ.get(CAP_ENV, "").strip()
    if not raw:
        return int(DEFAULT_CAP_GB * 2**30)
    try:
        gb = float(raw)
    except ValueError:
        raise UserError(f"${CAP_ENV}={raw!r} is not a number; give the feature cache's size cap in GB "
                        "(0: no cap)") from None
    if not gb >= 0 or gb == float("inf"):
        raise UserError(f"${CAP_ENV}={raw!r} must be a number of GB >= 0 (0: no cap)")
    return int(gb * 2**30) if gb > 0 else None


def _files(root: Path) -> list[os.DirEntry]:
    out, stack = [], [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.is_file(follow_symlinks=False):
                out.append(e)
    return out


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)


def enforce_cap(root: str | Path, keep: str | Path | None = None, limit: int | None = -1) -> list[Path]:
    """Delete the least recently used files under ``root`` until it holds at most ``limit``
    bytes (default: :func:`cap_bytes`); never ``keep``. Returns the deleted paths."""
    limit = cap_bytes() if limit == -1 else limit
    now, removed, entries = time.time(), [], []
    for e in _files(Path(root)):
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if _is_tmp(e.name):
            if now - st.st_mtime > _STALE_TMP_S:
                Path(e.path).unlink(missing_ok=True)
                removed.append(Path(e.path))
            continue
        entries.append((st.st_mtime, st.st_size, Path(e.path)))
    if limit is None:
        return removed
    total = sum(size for _, size, _ in entries)
    keep = Path(keep).resolve() if keep is not None else None
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        if keep is not None and path.resolve() == keep:
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
        total -= size
    return removed


def format_size(n: float) -> str:
    """Bytes for people: 512 B, 1.5 KB, 3.2 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def info() -> dict:
    """``{"root", "cap", "sections": {name: {"path", "files", "bytes"}}}`` of the user cache."""
    sections = {}
    for name in SECTIONS:
        path = cache_dir(name)
        files = [e for e in _files(path) if not _is_tmp(e.name)]
        sections[name] = {"path": str(path), "files": len(files),
                          "bytes": sum(e.stat(follow_symlinks=False).st_size for e in files)}
    return {"root": str(cache_dir()), "cap": cap_bytes(), "sections": sections}


def format_info(data: dict) -> list[str]:
    cap = format_size(data["cap"]) if data["cap"] else "none"
    lines = [f"vlkit cache at {data['root']}"]
    for name, s in data["sections"].items():
        extra = f" (cap {cap}, ${CAP_ENV})" if name == "features" else ""
        lines.append(f"  {name:<9} {s['files']:>6} files  {format_size(s['bytes']):>10}{extra}")
    return lines


def clear(what: str = "features") -> tuple[int, int]:
    """Delete the ``features`` or ``data`` section, or ``all``; returns (files, bytes) deleted."""
    if what not in (*SECTIONS, "all"):
        raise UserError(f"unknown cache section {what!r}; use one of {', '.join(SECTIONS)}, all")
    n = size = 0
    for name in SECTIONS if what == "all" else (what,):
        for e in _files(cache_dir(name)):
            try:
                size += e.stat(follow_symlinks=False).st_size
                os.unlink(e.path)
                n += 1
            except FileNotFoundError:
                continue
    return n, size
