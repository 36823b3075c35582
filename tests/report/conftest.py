"""Shared set-up for the report and `vlkit eval` tests: a private cache, one small evaluation run.

``digits_run`` runs the real command once per session (``vlkit eval preset:tiny-clip --data
digits ...``) and the report tests read the run directory it leaves; loading tiny-clip costs
most of the time, so it is done once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SUITES = "zeroshot,retrieval,calibration,conformal"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLKIT_CACHE", str(tmp_path_factory.mktemp("vlkit-cache")))
        yield


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def run_cli(argv: list[str]) -> CliResult:
    """``vlkit ARGV`` in-process through :func:`vlkit.cli.main` (exit code, stdout, stderr).

    Until ``vlkit.cli`` registers ``eval`` itself, the parser it builds gets it here from
    :func:`vlkit.evaluate.cli.add_cli`, the function the lead hooks in.
    """
    import vlkit.cli
    from vlkit.evaluate.cli import add_cli

    original = vlkit.cli.build_parser

    def build_parser():
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "eval" not in sub.choices:
            add_cli(sub)
        return parser

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(vlkit.cli, "build_parser", build_parser)
        try:
            rc = vlkit.cli.main(argv)
        except SystemExit as e:  # --help and argparse errors
            rc = int(e.code or 0)
    return CliResult(rc, out.getvalue(), err.getvalue())


def same_number(text: str, value) -> bool:
    """A printed number is ``value`` rounded to the digits printed (and n/a stands for null)."""
    if value is None:
        return text == "n/a"
    decimals = len(text.split(".")[1]) if "." in text else 0
    return math.isclose(float(text), value, rel_tol=0, abs_tol=0.5 * 10**-decimals + 1e-12)


@pytest.fixture(scope="session", name="same_number")
def same_number_fixture():
    return same_number


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, _private_cache) -> tuple[Path, CliResult]:
    out = tmp_path_factory.mktemp("eval-digits")
    result = run_cli(["eval", "preset:tiny-clip", "--data", "digits", "--suite", SUITES, "--out", str(out),
                      "conformal.alpha=0.05", "retrieval.n_examples=3"])
    assert result.rc == 0, result.err
    return out, result
