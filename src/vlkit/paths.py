"""Where vlkit keeps what it builds: the user cache (datasets, features) unless $VLKIT_CACHE says."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """``$VLKIT_CACHE`` or the platform's user cache directory, joined with ``parts`` (created)."""
    root = Path(os.environ.get("VLKIT_CACHE") or platformdirs.user_cache_dir("vlkit"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
