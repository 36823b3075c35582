"""Features of frozen towers, computed once and reused.

Text-only adaptation methods (CoOp, KgCoOp, CLIP-Adapter, ...) leave the image tower frozen,
yet their reference code re-encodes every image every step. :class:`FeatureCache` keys a
tensor (or a dict of tensors) by what determines it: model fingerprint, data fingerprint,
transform ``repr`` and view index (any JSON-able parts), and keeps it

- on disk as safetensors under ``cache_dir("features")`` (no pickle), written to a temp file
  and moved into place with ``os.replace``, so a crash never leaves a half file;
- in memory in an LRU layer, so repeated calls in one process do not touch the disk;
- within a size cap on disk (``$VLKIT_FEATURE_CACHE_GB``, :mod:`vlkit.cache_admin`): after each
  write the least recently used files of the folder are deleted until it fits.

**Integrity.** A cache file is only a faster way to get what ``compute()`` would return, so
it is never trusted blindly. Each file carries in its safetensors metadata its key and, per
tensor, the dtype, the shape and the sha256 of the bytes (:func:`write_tensors`). A read
(:func:`read_tensors`) checks the key, the names, dtypes and shapes, the checksums, that every
value is finite, and what the caller knows (``rows``: the number of items asked for). Any
mismatch deletes the file and recomputes, with one warning line naming the file; a damaged
cache never crashes a run and never hands it wrong numbers. Entries written before checksums
existed are recomputed once (one warning line per process), not patched: their bytes cannot
be vouched for. Features that ``compute()`` returns non-finite are handed back but not stored.

``hits`` (memory), ``disk_hits`` and ``misses`` (calls of ``compute``) count what happened,
for benchmarks and tests. Returned tensors are shared with the cache: treat them as read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import UserError
from ..paths import cache_dir

Features = Union[torch.Tensor, dict[str, torch.Tensor]]
_SINGLE = "__tensor__"  # the name a lone tensor is stored under
_TENSORS = "vlkit_tensors"  # metadata field: JSON {name: {"dtype", "shape", "sha256"}}
_legacy_warned = False  # one line per process for entries written before checksums


def canonical_key(key_parts: Mapping[str, Any]) -> str:
    """Key parts as canonical JSON (sorted keys); non-JSON values by ``repr`` (e.g. transforms)."""
    if not isinstance(key_parts, Mapping) or not key_parts:
        raise UserError("FeatureCache key_parts must be a non-empty dict, e.g. {'model': fp, 'data': fp}")
    return json.dumps(dict(key_parts), sort_keys=True, default=repr, ensure_ascii=False)


class FeatureCache:
    """Disk + in-memory LRU cache of feature tensors keyed by a dict of key parts."""

    def __init__(self, root: str | Path | None = None, max_items: int = 16, max_bytes: int = 4 << 30):
        self.root = Path(root) if root is not None else cache_dir("features")
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_items, self.max_bytes = max_items, max_bytes
        self._memory: OrderedDict[str, tuple[Features, int]] = OrderedDict()
        self.hits = self.disk_hits = self.misses = 0

    def path(self, key_parts: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(canonical_key(key_parts).encode()).hexdigest()[:32]
        return self.root / f"{digest}.safetensors"

    def get(self, key_parts: Mapping[str, Any], compute: Callable[[], Features], rows: int | None = None) -> Features:
        """The features for ``key_parts``: from memory, else disk, else ``compute()`` (then saved).

        ``rows``: when the caller knows how many items it asked for, every stored tensor must
        have that many rows (first dimension); an entry that does not is recomputed.
        """
        key = canonical_key(key_parts)
        if key in self._memory and _rows_problem(_as_dict(self._memory[key][0]), rows) is None:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key][0]
        path = self.path(key_parts)
        value = self._read(path, key, rows)
        if value is not None:
            self.disk_hits += 1
            _touch(path)  # recently used: the size cap evicts the least recently used first
        else:
            self.misses += 1
            value = _detach(compute())
            if all_finite(_as_dict(value)):
                self._write(path, key, value)
            else:
                warnings.warn(f"vlkit: features computed for cache file {path} hold NaN or infinite values; "
                              "not caching them (check the model's weights)", stacklevel=2)
        self._remember(key, value)
        return value

    def __contains__(self, key_parts: Mapping[str, Any]) -> bool:
        return canonical_key(key_parts) in self._memory or self.path(key_parts).is_file()

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "disk_hits": self.disk_hits, "misses": self.misses,
                "in_memory": len(self._memory)}

    def clear_memory(self) -> None:
        self._memory.clear()

    # -- internals ----------------------------------------------------------------------------
    def _read(self, path: Path, key: str, rows: int | None) -> Features | None:
        tensors = read_tensors(path, key, check=lambda t: _rows_problem(t, rows))
        if tensors is None:
            return None
        return tensors[_SINGLE] if set(tensors) == {_SINGLE} else tensors

    def _write(self, path: Path, key: str, value: Features) -> None:
        """The one place a cache entry is written; then the folder is held to its size cap."""
        from ..cache_admin import enforce_cap

        write_tensors(path, _as_dict(value), key)
        enforce_cap(self.root, keep=path)

    def _remember(self, key: str, value: Features) -> None:
        size = sum(t.numel() * t.element_size() for t in _as_dict(value).values())
        self._memory[key] = (value, size)
        while self._memory and (len(self._memory) > self.max_items or
                                sum(s for _, s in self._memory.values()) > self.max_bytes):
            self._memory.popitem(last=False)


# -- verified safetensors files (also the adaptation view banks' format) -----------------------


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes in memory order (what safetensors stores)."""
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def _record(t: torch.Tensor) -> dict:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "sha256": tensor_sha256(t)}


def all_finite(tensors: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values()
               if t.is_floating_point() or t.is_complex())


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], key: str) -> None:
    """Save ``tensors`` as safetensors with ``key`` and each tensor's dtype, shape and sha256 in
    the metadata; via a temp file in the same folder and ``os.replace`` (never a half file)."""
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    metadata = {"key": key, _TENSORS: json.dumps({name: _record(t) for name, t in tensors.items()})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tensors(path: Path, key: str, check: Optional[Callable[[dict], Optional[str]]] = None,
                 what: str = "feature cache file") -> dict[str, torch.Tensor] | None:
    """The tensors of ``path`` if it exists and passes every check, else None.

    A file that exists but fails (unreadable, another key, names/dtypes/shapes other than
    recorded, a sha256 mismatch, NaN or infinite values, or ``check(tensors)`` returning a
    problem) is deleted, with one warning line naming it; the caller then recomputes.
    """
    global _legacy_warned
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        problem = _problem(meta, tensors, key) or (check(tensors) if check else None)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # the bytes are not safetensors
        problem = f"is unreadable ({' '.join(str(e).split())})"
    if problem is None:
        return tensors
    Path(path).unlink(missing_ok=True)
    if problem == "legacy":
        if not _legacy_warned:
            _legacy_warned = True
            warnings.warn(f"vlkit: cache files written before checksums are recomputed once (first: {path})",
                          stacklevel=3)
        return None
    warnings.warn(f"vlkit: {what} {path} {problem}; recomputing it", stacklevel=3)
    return None


def _problem(meta: Mapping[str, str], tensors: Mapping[str, torch.Tensor], key: str) -> str | None:
    """What is wrong with a stored entry (a short phrase), "legacy" for an unchecksummed one, or None."""
    if meta.get("key") != key:
        return "belongs to another key (a damaged or foreign file)"
    if _TENSORS not in meta:
        return "legacy"
    try:
        records = json.loads(meta[_TENSORS])
        expected = {name: (r["dtype"], list(r["shape"]), r["sha256"]) for name, r in records.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return "has unreadable checksum metadata"
    if set(expected) != set(tensors):
        return f"holds tensors {sorted(tensors)} where {sorted(expected)} were recorded"
    for name, t in tensors.items():
        dtype, shape, sha = expected[name]
        if (str(t.dtype).removeprefix("torch."), list(t.shape)) != (dtype, shape):
            return f"holds {name} as {list(t.shape)} {t.dtype} where {shape} {dtype} was recorded"
        if tensor_sha256(t) != sha:
            return f"fails its sha256 check on {name} (damaged bytes)"
    if not all_finite(tensors):
        return "holds NaN or infinite values"
    return None


def _rows_problem(tensors: Mapping[str, torch.Tensor], rows: int | None) -> str | None:
    if rows is None:
        return None
    for name, t in tensors.items():
        got = t.shape[0] if t.dim() else None
        if got != rows:
            label = "" if name == _SINGLE else f" in {name}"
            return f"holds {got} rows{label} where {rows} were asked for"
    return None


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves hits
        pass


def _as_dict(value: Features) -> dict[str, torch.Tensor]:
    return {_SINGLE: value} if isinstance(value, torch.Tensor) else dict(value)


def _detach(value: Features) -> Features:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        return {str(k): v.detach().cpu().contiguous() for k, v in value.items()}
    raise TypeError(f"FeatureCache compute() must return a tensor or a dict of tensors, got {type(value).__name__}")
