"""Features of frozen towers, computed once and reused.

Text-only adaptation methods (CoOp, KgCoOp, CLIP-Adapter, ...) leave the image tower frozen,
yet their reference code re-encodes every image every step. :class:`FeatureCache` keys a
tensor (or a dict of tensors) by what determines it: model fingerprint, data fingerprint,
transform ``repr`` and view index (any JSON-able parts), and keeps it

- on disk as safetensors under ``cache_dir("features")`` (no pickle), written to a temp file
  and moved into place with ``os.replace``, so a crash never leaves a half file;
- in memory in an LRU layer, so repeated calls in one process do not touch the disk.

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
from typing import Any, Callable, Mapping, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import UserError
from ..paths import cache_dir

Features = Union[torch.Tensor, dict[str, torch.Tensor]]
_SINGLE = "__tensor__"  # the name a lone tensor is stored under


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

    def get(self, key_parts: Mapping[str, Any], compute: Callable[[], Features]) -> Features:
        """The features for ``key_parts``: from memory, else disk, else ``compute()`` (then saved)."""
        key = canonical_key(key_parts)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key][0]
        path = self.path(key_parts)
        value = self._read(path, key)
        if value is not None:
            self.disk_hits += 1
        else:
            self.misses += 1
            value = _detach(compute())
            self._write(path, key, value)
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
    def _read(self, path: Path, key: str) -> Features | None:
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:  # a hash collision or a foreign file
                    return None
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            warnings.warn(f"vlkit: feature cache file {path} is unreadable ({e}); recomputing", stacklevel=3)
            return None
        return tensors[_SINGLE] if set(tensors) == {_SINGLE} else tensors

    def _write(self, path: Path, key: str, value: Features) -> None:
        tensors = {_SINGLE: value} if isinstance(value, torch.Tensor) else value
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"key": key})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _remember(self, key: str, value: Features) -> None:
        size = sum(t.numel() * t.element_size() for t in _tensors(value))
        self._memory[key] = (value, size)
        while self._memory and (len(self._memory) > self.max_items or
                                sum(s for _, s in self._memory.values()) > self.max_bytes):
            self._memory.popitem(last=False)


def _tensors(value: Features) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else list(value.values())


def _detach(value: Features) -> Features:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        return {str(k): v.detach().cpu().contiguous() for k, v in value.items()}
    raise TypeError(f"FeatureCache compute() must return a tensor or a dict of tensors, got {type(value).__name__}")
