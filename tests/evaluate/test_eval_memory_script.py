"""Smoke test of benchmarks/eval_memory.py in --quick mode: it measures both rankings in fresh
processes, they agree on the ranks, and the blocked ranking's memory does not grow with the
gallery the way the unblocked one's does (sizes chosen so the unblocked chunk x gallery arrays
are several times the blocked block x block ones)."""

from __future__ import annotations

import shlex

import pytest

from bench_script import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("eval_memory")


@pytest.fixture(scope="module")
def result(bench):
    return bench.main(["--quick"])


def test_quick_run_measures_both_methods_per_size(result):
    rows = result["rows"]
    assert [r["blocked"]["n_images"] for r in rows] == [1000, 8000]
    for r in rows:
        blocked, unblocked = r["blocked"], r["unblocked"]
        assert blocked["ranks"] == unblocked["ranks"]  # the same ranks (the script also refuses otherwise)
        assert blocked["n_texts"] == 2 * blocked["n_images"] and blocked["n_queries"] == 2 * 256
        assert blocked["peak_mb"] > 0 and unblocked["peak_mb"] > 0
    big = rows[-1]
    # unblocked: 128 queries x 16,000 texts of scores and masks (tens of MB); blocked: 128 x 128
    assert big["unblocked"]["step_mb"] > 2 * big["blocked"]["step_mb"] + 5
    assert big["unblocked"]["step_mb"] > rows[0]["unblocked"]["step_mb"]


def test_table_and_command(bench, result):
    assert result["table"].count("\n") == 3  # header, rule, two sizes
    assert "| 8,000 | 16,000 | 512 |" in result["table"]
    argv = shlex.split(result["command"])[2:]
    assert vars(bench.parse_args(argv)) == vars(bench.parse_args(["--quick"]))


@pytest.mark.parametrize("argv", [["--sizes", "10,x"], ["--block", "0"], ["--max-queries", "-1"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
