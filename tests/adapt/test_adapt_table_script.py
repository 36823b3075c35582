"""benchmarks/adapt_table.py --quick: one process, every table, failures recorded, numbers consistent.

Runs the quick table (tiny random CLIP, digits, 2 shots, 1 seed) once, with ``maple.n_ctx=0`` so
one method fails with a UserError. No accuracy or timing is asserted: only that the table agrees
with its own numbers (who beats zero-shot, HM), that a failure is one recorded line and the other
methods go on, that the shared store encodes fewer images than cold runs would, and that the
printed command reproduces the settings.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from bench_script import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("adapt_table")


@pytest.fixture(scope="module")
def argv(tmp_path_factory):
    return ["--quick", "--out", str(tmp_path_factory.mktemp("table")), "maple.n_ctx=0"]


@pytest.fixture(scope="module")
def result(bench, argv):
    return bench.main(argv)


def mean(cell):
    return cell["mean"] if isinstance(cell, dict) else cell


def test_every_protocol_and_method_has_a_row_zeroshot_first(bench, result):
    methods = bench.QUICK["methods"].split(",")
    assert [(t["protocol"], t["data"]) for t in result["tables"]] == [("fewshot", "digits"), ("base2new", "digits")]
    for table in result["tables"]:
        assert [r["method"] for r in table["rows"]] == methods
        for row in table["rows"]:
            for key in ("test_acc", "base_acc"):
                if key in row:
                    assert 0.0 <= row[key]["mean"] <= 1.0


def test_failing_method_is_one_line_and_the_rest_go_on(result):
    for table in result["tables"]:
        rows = {r["method"]: r for r in table["rows"]}
        assert rows["maple"]["seeds"] == [] and "n_ctx" in rows["maple"]["error"]
        assert "\n" not in rows["maple"]["error"]
        assert rows["lora"]["error"] is None and len(rows["lora"]["seeds"]) == 1  # after maple: still ran
    assert "| maple | failed: seed 1: maple needs n_ctx" in result["markdown"]


def test_beats_zero_shot_follows_the_numbers(result):
    for table in result["tables"]:
        zs = table["rows"][0]
        key = "test_acc" if table["protocol"] == "fewshot" else "HM"
        winners = []
        for row in table["rows"][1:]:
            if row["error"]:
                continue
            mine, ref = mean(row.get(key)), mean(zs.get(key))
            assert row[f"beats_{key}"] == (None if mine is None else mine > ref)
            winners += [row["method"]] if row[f"beats_{key}"] else []
        line = next(ln for ln in result["markdown"].splitlines()
                    if ln.startswith("**Beat zero-shot") and f"({table['protocol']}" in ln)
        assert line.split(": ", 1)[1].split("**")[0] == (", ".join(winners) or "none")


def test_base2new_hm_and_per_class_methods(result):
    table = next(t for t in result["tables"] if t["protocol"] == "base2new")
    assert table["classes"]["new"] >= 2
    for row in table["rows"]:
        if row["error"]:
            continue
        b, n = mean(row["base_acc"]), mean(row["new_acc"])
        if row["method"] in ("linear_probe", "tip_adapter_f"):  # per-class parameters: nothing on new classes
            assert n is None and row["HM"] is None
        else:
            assert row["HM"] == pytest.approx(2 * b * n / (b + n))


def test_shared_store_saves_encodings(result):
    enc = result["encodings"]
    assert 0 < enc["encoded"] < enc["cold"]


def test_outputs_written_and_command_reproduces_settings(bench, result, argv):
    out = Path(argv[2])
    assert (out / "adapt_table.md").read_text() == result["markdown"]
    saved = json.loads((out / "adapt_table.json").read_text())
    assert saved["encodings"] == result["encodings"] and len(saved["tables"]) == 2
    again = bench.parse_args(shlex.split(result["command"])[2:])
    assert vars(again) == vars(bench.parse_args(argv))
    from vlkit.errors import UserError

    with pytest.raises(UserError, match="--overwrite"):
        bench.main(argv)


def test_settings_follow_the_shipped_recipes_and_the_data(bench):
    path, opts = bench.recipe_options("openmoji:subgroup", "base2new")
    assert path.endswith("moji-subgroup-base2new.yaml") and opts["cocoop"]["batch_size"] == 8
    assert bench.recipe_options("openmoji:group", "base2new")[0] == path  # borrowed: same dataset and protocol
    assert bench.recipe_options("digits", "base2new") == (None, {})
    assert bench.short_classes("openmoji:subgroup", 16)[0] > 0  # subgroups need the allow_fewer fallback
    assert bench.short_classes("openmoji:group", 16)[0] == 0


@pytest.mark.parametrize("bad", [["--methods", "no_such"], ["--protocols", "cross"], ["coop.n_ctx=4"],
                                 ["--quick", "--budget", "0"]])
def test_bad_arguments_are_refused(bench, bad):
    with pytest.raises(SystemExit):
        bench.parse_args(bad if "--quick" in bad else ["--methods", "zeroshot", *bad])


def test_unknown_method_key_fails_before_anything_runs(bench, tmp_path):
    from vlkit.errors import UserError

    with pytest.raises(UserError, match="valid keys"):
        bench.main(["--quick", "--out", str(tmp_path / "t"), "coop.no_such_key=1"])
    assert not (tmp_path / "t").exists()
