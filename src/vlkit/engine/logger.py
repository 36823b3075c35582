"""What a run tells its user: a progress bar, ``metrics.jsonl``, trackers, one-line notes.

Only rank 0 writes (the other ranks get a logger that keeps the history in memory and writes
nothing), so a DDP run has one bar and one metrics file.

``metrics.jsonl`` holds one JSON object per logged step: ``step``, ``epoch``, ``lr``, every
scalar the task returned (``loss`` and each ``*_loss``), ``samples_per_s`` (global samples per
second since the previous line), ``time`` (training seconds since the run began, counted across
resumes), and anything a hook recorded with ``state.record(...)``. When a run resumes, lines
past the checkpoint's step are dropped, so the file of a killed-and-resumed run reads like that
of an uninterrupted one. Each line is appended by one ``write`` on an ``O_APPEND`` descriptor, so
a second writer can add lines but never cut or interleave one (and ``fit`` holds the run
directory's lock, :mod:`.lock`, so a second run is refused before it writes). The same lines go
to the trackers chosen with ``engine.log_to`` (TensorBoard, Weights & Biases: :mod:`.trackers`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .trackers import open_trackers

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill: nothing after it counts
                break
    return rows


def truncate_metrics(path: str | Path, step: int) -> list[dict[str, Any]]:
    """Keep the lines up to ``step`` (the resumed checkpoint); rewrite the file; return them."""
    path = Path(path)
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    if path.exists():  # replaced whole, so a reader never sees half a file
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    return rows


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Progress bar + JSONL + trackers for rank 0; a silent history keeper elsewhere."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        enabled: bool,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        log_to: Iterable[str] = (),
        tracker_options: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
    ):
        self.enabled = enabled
        self.history: list[dict[str, Any]] = list(history or [])
        self.path = Path(out_dir) / METRICS_FILE
        self._file = None
        self._bar = None
        self._trackers: list = []
        self._bar_args: dict[str, int] | None = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._trackers = open_trackers(log_to, out_dir, **(tracker_options or {}))  # first: may refuse
        # O_APPEND and one write() per line: lines of two writers never interleave or overwrite
        # each other (a second run into this out_dir is refused by the run lock anyway)
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._bar_args = dict(total=total_steps, initial=start_step) if progress else None

    def note(self, message: str) -> None:
        """One line for the user (on rank 0), printed so it does not break the bar."""
        if not self.enabled or not message:
            return
        if self._bar is not None:
            self._bar.write(f"vlkit: {message}", file=sys.stderr)
        else:
            print(f"vlkit: {message}", file=sys.stderr, flush=True)

    def advance(self, n: int, record: dict[str, Any] | None = None) -> None:
        """Move the bar by ``n`` steps; show loss, lr and samples/s from ``record``."""
        if self._bar is None and self.enabled and self._bar_args is not None:
            from tqdm.auto import tqdm  # made at the first step, after the set-up notes

            self._bar = tqdm(**self._bar_args, unit="step", dynamic_ncols=True)
        if self._bar is None:
            return
        if record is not None:
            shown = {"loss": f"{record['loss']:.4g}", "lr": f"{record['lr']:.3g}"}
            if record.get("samples_per_s") is not None:
                shown["samples/s"] = f"{record['samples_per_s']:.1f}"
            self._bar.set_postfix(shown, refresh=False)
        self._bar.update(n)

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics line (kept in ``history`` on every rank)."""
        self.history.append(record)
        if self._file is None:
            return
        os.write(self._file, (json.dumps({k: _clean(v) for k, v in record.items()}) + "\n").encode())
        for tracker in self._trackers:
            tracker.log(record)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            os.close(self._file)
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []
        self._bar = self._file = self._bar_args = None

