"""Progress that fits where the output goes, and warnings as one line.

:class:`Progress` is every progress display of vlkit (training steps, image encoding, the
adaptation grid): a tqdm bar when stderr is a terminal; otherwise (a log file, a pipe, a CI
job) one line every ``every_s`` seconds and one at the end, never one per step. The interval
is ``$VLKIT_PROGRESS_EVERY`` seconds (default 10; 0: a line at every update).

:func:`warn` raises a ``vlkit:`` warning; the CLI prints every warning as one line
(``vlkit: warning: ...``), so a long run's log holds no Python warning boilerplate.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any, Callable, TextIO

from ..errors import UserError

DEFAULT_EVERY_S = 10.0


def every_seconds() -> float:
    """The interval of plain-text progress lines: ``$VLKIT_PROGRESS_EVERY`` or 10 seconds."""
    text = os.environ.get("VLKIT_PROGRESS_EVERY", "").strip()
    if not text:
        return DEFAULT_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"VLKIT_PROGRESS_EVERY={text!r} must be a number of seconds >= 0 (0: every update)")
    return value


def warn(message: str, stacklevel: int = 2) -> None:
    """A user-facing warning: one line, ``vlkit: warning: MESSAGE`` under the CLI."""
    warnings.warn(f"vlkit: {message}", stacklevel=stacklevel + 1)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


class Progress:
    """``total`` units of work (steps, images, cells) named ``desc``; see the module docstring.

    ``enabled=False`` shows nothing. ``bar``: None picks a tqdm bar on a terminal, else lines;
    True/False force it. ``every_s`` and ``clock`` (a seconds counter) exist for tests and
    callers that want another pace.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "step", initial: int = 0,
                 enabled: bool = True, bar: bool | None = None, every_s: float | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic, leave: bool = True):
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_seconds() if every_s is None else float(every_s)
        self.clock = clock
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._start_n = self.n
        self._t0 = self._last = clock()
        self._printed_n: int | None = None
        if enabled and (bar if bar is not None else _is_terminal(self.stream)):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                             file=self.stream, leave=leave)

    def update(self, n: int = 1, postfix: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        self.n += n
        if postfix is not None:
            self.postfix = dict(postfix)
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix(self.postfix, refresh=False)
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            self._line(now)

    def note(self, message: str) -> None:
        """One line for the user that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """The bar closes; in line mode a last line tells where the work ended (once)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.n != self._printed_n and self.n > self._start_n:
            self._line(self.clock(), final=True)
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self._t0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else None
        parts = [f"vlkit: {self.desc}: {done} {self.unit}s{pct}", f"{elapsed:.0f} s"]
        if rate:
            parts.append(f"{rate:.3g} {self.unit}s/s")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        print(", ".join(parts) + (" (done)" if final and self.total and self.n >= self.total else ""),
              file=self.stream, flush=True)
        self._last, self._printed_n = now, self.n
