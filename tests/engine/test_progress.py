"""engine.progress: a bar on a terminal, else a line every ``every_s`` seconds and one at the end."""

from __future__ import annotations

import io

import pytest

from vlkit.engine.progress import Progress, every_seconds
from vlkit.errors import UserError


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_off_a_terminal_a_line_per_interval_and_one_at_the_end():
    out, clock = io.StringIO(), Clock()
    p = Progress(100, "encoding", unit="image", every_s=10, stream=out, clock=clock)
    for _ in range(25):  # one image per second
        clock.t += 1
        p.update(1, {"loss": "0.5"})
    p.close()
    p.close()  # closing twice prints nothing more
    lines = out.getvalue().splitlines()
    assert [x.split(",")[0] for x in lines] == ["vlkit: encoding: 10/100 images (10%)",
                                               "vlkit: encoding: 20/100 images (20%)",
                                               "vlkit: encoding: 25/100 images (25%)"]
    assert lines[0] == "vlkit: encoding: 10/100 images (10%), 10 s, 1 images/s, loss 0.5"
    assert not lines[-1].endswith("(done)")  # it stopped at 25 of 100


def test_a_finished_run_says_done_and_a_disabled_one_says_nothing():
    out, clock = io.StringIO(), Clock()
    with Progress(3, "adapt", unit="cell", every_s=0, stream=out, clock=clock) as p:
        for _ in range(3):
            clock.t += 2
            p.update()
    assert out.getvalue().splitlines()[-1] == "vlkit: adapt: 3/3 cells (100%), 6 s, 0.5 cells/s"
    assert len(out.getvalue().splitlines()) == 3  # the last update printed: no closing repeat
    quiet = io.StringIO()
    with Progress(3, "x", enabled=False, every_s=0, stream=quiet) as p:
        p.update(3)
    assert quiet.getvalue() == ""


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("VLKIT_PROGRESS_EVERY", raising=False)
    assert every_seconds() == 10.0
    monkeypatch.setenv("VLKIT_PROGRESS_EVERY", "2.5")
    assert every_seconds() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("VLKIT_PROGRESS_EVERY", bad)
        with pytest.raises(UserError, match=f"VLKIT_PROGRESS_EVERY='{bad}' must be a number of seconds >= 0"):
            every_seconds()


def test_under_the_cli_every_warning_is_one_line(tmp_path):
    import warnings

    from vlkit.cli import _one_line_warning
    from vlkit.engine.progress import warn

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        warn("the cache  was\nrebuilt")
    w = got[0]
    assert str(w.message) == "vlkit: the cache  was\nrebuilt"
    assert _one_line_warning(w.message, w.category, w.filename, w.lineno) == "vlkit: warning: the cache was rebuilt\n"
    other = _one_line_warning(DeprecationWarning("old API\n  use the new one"), DeprecationWarning,
                              "/x/site-packages/lib/mod.py", 12, line="    old()")
    assert other == "warning: DeprecationWarning: old API (mod.py:12)\n"
