"""What a benchmark compares against, and the one line it prints when that is not installed.

The peers (CLIP_benchmark, and the packages open_clip_train imports: braceexpand, webdataset,
pandas) are not dependencies of vlkit; ``make bench`` installs them (the ``bench`` extra of
pyproject.toml). A script calls :func:`require` before it starts, so a missing peer is one line
naming the install command, not a traceback from inside a subprocess.
"""

from __future__ import annotations

import importlib
import sys

INSTALL = "make bench (or: .venv/bin/pip install -e '.[bench]')"
OPEN_CLIP_TRAIN = ("open_clip_train.main", "braceexpand", "webdataset", "pandas")
CLIP_BENCHMARK = ("clip_benchmark.metrics.zeroshot_classification", "clip_benchmark.metrics.zeroshot_retrieval")


def missing(modules) -> list[str]:
    """The modules of ``modules`` that cannot be imported (their top-level package names)."""
    out = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name.split(".")[0])
    return list(dict.fromkeys(out))


def require(script: str, peer: str, modules) -> None:
    """Exit with status 1 and one line when a module the comparison needs is not installed."""
    absent = missing(modules)
    if absent:
        print(f"{script}: compares against {peer}, but {', '.join(absent)} is not installed; run {INSTALL}",
              file=sys.stderr)
        raise SystemExit(1)
