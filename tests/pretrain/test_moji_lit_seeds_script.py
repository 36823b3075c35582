"""Smoke test of benchmarks/moji_lit_seeds.py on a tiny recipe: one training run per seed, the
recipe's retrieval read back for both directions, and mean/std over the seeds. No timing or
quality is asserted (a 3-step model retrieves at chance)."""

from __future__ import annotations

import pytest

from bench_script import load_benchmark

TINY = ["model=preset:tiny-clip", "data.max_samples=32", "data.caption=first", "objectives=[{name: clip}]",
        "engine.steps=3", "engine.batch_size=16", "engine.schedule.warmup_steps=1", "engine.tensorboard=false",
        "engine.checkpoint_every=0", "eval.suites=[retrieval]"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("moji_lit_seeds")


def test_each_seed_trains_and_the_summary_is_their_mean(bench):
    out = bench.main(["--recipe", "shapes-clip", "--seeds", "3,4", *TINY])
    assert [r["seed"] for r in out["runs"]] == [3, 4]
    for side in ("image -> name", "name -> image"):
        recalls = [r[side] for r in out["runs"]]
        for r1, r5, r10 in recalls:
            assert 0 <= r1 <= r5 <= r10 <= 1
        mean_r1, _ = out["summary"][side][0]
        assert mean_r1 == pytest.approx(sum(r[0] for r in recalls) / 2)


@pytest.mark.parametrize("argv", [["--seeds", "a,b"], ["--seeds", ""], ["engine.seed"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_a_recipe_without_retrieval_is_refused_before_training(bench, capsys):
    with pytest.raises(SystemExit, match="does not evaluate retrieval"):
        bench.main(["--recipe", "shapes-clip", "--seeds", "0", *TINY, "eval.suites=[compositional]"])
    assert "seed 0:" not in capsys.readouterr().out  # nothing trained
