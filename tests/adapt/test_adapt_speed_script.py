"""Smoke test of benchmarks/adapt_speed.py on a tiny model: it runs end to end, every requested
method trains on both sides (cached features and re-encoded images) and reaches the same test
accuracy, the shared store really saves encodings across seeds, and the printed command
reproduces the run's settings. No timing is asserted (a benchmark's numbers depend on the machine)."""

from __future__ import annotations

import os
import shlex

import pytest

from bench_script import load_benchmark

METHODS = ["coop", "clip_adapter", "tip_adapter_f"]
ARGS = ["--model", "preset:tiny-clip", "--data", "digits", "--methods", ",".join(METHODS), "--shots", "2",
        "--epochs", "3", "--steps", "2", "--views", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("adapt_speed")


@pytest.fixture(scope="module")
def result(bench):
    before = os.environ.get("VLKIT_CACHE")
    out = bench.main(ARGS)
    assert os.environ.get("VLKIT_CACHE") == before  # the temp cache does not leak into the process
    return out


def test_each_method_trains_on_both_sides_to_the_same_accuracy(result):
    assert list(result["methods"]) == METHODS
    for name, m in result["methods"].items():
        cached, reencode = m["cached"], m["reencode"]
        for side in (cached, reencode):
            assert side["steps"] == 2, name  # the --steps cap, on both sides
            assert side["s_epoch"] > 0 and 0 <= side["test_acc"] <= 100
        assert cached["test_acc"] == pytest.approx(reencode["test_acc"], abs=2.0), name
        assert cached["image_s_step"] == 0 < reencode["image_s_step"]  # only re-encoding touches images
    assert result["methods"]["coop"]["reencode"]["text_per_step"]
    assert not result["methods"]["clip_adapter"]["reencode"]["text_per_step"]
    assert result["features"]["build_images"] == 2 * result["features"]["n_train"]  # V views, encoded once


def test_shared_store_encodes_less_than_cold_seeds(result):
    warm, cold = result["seeds"]["warm"], result["seeds"]["cold"]
    assert [w["seed"] for w in warm] == [1, 2, 3]
    assert warm[0]["encoded"] == cold[0]["encoded"] > 0  # seed 1 starts cold either way
    for w, c in zip(warm[1:], cold[1:]):
        assert c["measured"] and w["encoded"] < c["encoded"] == cold[0]["encoded"]


def test_table_has_a_row_per_method_and_the_command_reproduces_the_run(bench, result):
    for name in METHODS:
        assert f"| {name} (" in result["table"]
    assert "| 3 seeds, seconds" in result["table"]
    argv = shlex.split(result["command"])[2:]
    assert vars(bench.parse_args(argv)) == vars(bench.parse_args(ARGS))


@pytest.mark.parametrize("argv", [["--views", "0"], ["--methods", "zeroshot"], ["--methods", "no_such_method"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_no_seeds_skips_the_seed_comparison_and_keeps_the_flag_in_the_command(bench):
    args = ARGS[:ARGS.index("--methods")] + ["--methods", "clip_adapter"] + ARGS[ARGS.index("--shots"):] + ["--no-seeds"]
    out = bench.main(args)
    assert out["seeds"] is None and "3 seeds" not in out["table"] and "| clip_adapter (" in out["table"]
    assert "--no-seeds" in shlex.split(out["command"])
    assert vars(bench.parse_args(shlex.split(out["command"])[2:])) == vars(bench.parse_args(args))
