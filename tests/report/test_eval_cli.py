"""`vlkit eval`: the files it writes, the table it prints, the errors it gives."""

from __future__ import annotations

import json

import pytest

from vlkit.evaluate import EVALUATORS
from vlkit.evaluate.cli import SUITES as HELP_SUITES


def printed_table(stdout: str) -> dict[str, tuple[str, str]]:
    """{metric: (value text, chance text)} from the printed table."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        parts = line.split()
        if parts and "/" in parts[0] and not line.startswith(("wrote", "report:")):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def test_eval_writes_results_and_prints_the_numbers_of_metrics_json(digits_run, same_number):
    out, result = digits_run
    for name in ("metrics.json", "metrics.md", "artifacts.json", "report.html"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    table = printed_table(result.out)
    assert set(table) == set(saved["metrics"])
    assert {k.split("/")[0] for k in table} == {"zeroshot", "retrieval", "calibration", "conformal"}
    for key, (value, chance) in table.items():
        assert same_number(value, saved["metrics"][key]), (key, value, saved["metrics"][key])
        recorded = saved["chance"].get(key)
        assert (chance == "" and recorded is None) or same_number(chance, recorded), (key, chance, recorded)
    assert f"report: {out / 'report.html'}" in result.out
    # the trailing SUITE.KEY=VALUE options reached their suites
    assert saved["config"]["conformal"]["alpha"] == 0.05
    assert saved["config"]["retrieval"]["n_examples"] == 3


def test_unknown_suite_is_one_line_listing_the_suites_and_exit_2(cli, tmp_path):
    result = cli(["eval", "preset:tiny-clip", "--data", "digits", "--suite", "zeroshot,zeroshoot",
                      "--out", str(tmp_path / "run")])
    assert result.rc == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlkit: error: ") and "'zeroshoot'" in lines[0]
    assert all(name in lines[0] for name in EVALUATORS.names())
    assert not (tmp_path / "run").exists()  # nothing was evaluated or written


@pytest.mark.parametrize("form", ["trailing", "old --option"])
def test_malformed_and_unknown_options_are_one_line_errors(cli, form):
    base = ["eval", "preset:tiny-clip", "--data", "digits", "--suite", "zeroshot"]

    def given(item):
        return base + ([item] if form == "trailing" else ["--option", item])

    result = cli(given("alpha=0.1"))
    assert result.rc == 2 and "SUITE.KEY=VALUE" in result.err and result.err.strip().splitlines()[-1].startswith(
        "vlkit: error: ")
    result = cli(given("zeroshot.splt=val"))
    assert result.rc == 2 and "zeroshot.splt" in result.err and "split" in result.err
    result = cli(given("conformal.alpha=0.1"))  # a suite that is not run
    assert result.rc == 2 and "'conformal'" in result.err
    # the old form works and says, in one line, how to write it now
    notes = [line for line in result.err.splitlines() if line.startswith("vlkit: note: ")]
    assert notes == ([] if form == "trailing" else
                     ["vlkit: note: --option is an older form; write the suite options last: conformal.alpha=0.1"])


def test_help_names_exactly_the_registered_suites(cli):
    assert list(HELP_SUITES) == EVALUATORS.names()
    result = cli(["eval", "--help"])
    assert result.rc == 0
    text = " ".join(result.out.split())  # argparse wraps lines
    assert f"comma-separated suites: {', '.join(EVALUATORS.names())}" in text
    for flag in ("--data", "--suite", "--split", "--out", "--seed", "--device", "key=value"):
        assert flag in text
