"""The adaptation grid survives a kill (issue 17): each finished cell (method x shots x seed) is
written as it finishes; a rerun with the same config into the same out dir reuses those cells,
trains the rest, and ends with the table an uninterrupted run writes."""

from __future__ import annotations

import json

import pytest

from vlkit import adapt
from vlkit.adapt import protocols

ARGS = dict(shots=[1], seeds=[1, 2, 3], views=1, overrides=["epochs=1", "coop.n_ctx=2"], progress=True)


def _table(out):
    table = json.loads(out["paths"]["json"].read_text())
    return table["rows"], sorted((r["seed"], r["test_acc"], r["final_loss"]) for r in table["records"])


def test_a_killed_grid_keeps_its_finished_cells_and_the_rerun_trains_only_the_rest(
        tiny_model, store, tmp_path, monkeypatch, capsys):
    whole = adapt.run("coop", "digits", tiny_model, out=str(tmp_path / "whole"), store=store, **ARGS)
    out = tmp_path / "killed"
    real = protocols.train_one
    trained = []

    def killed_at_the_third_cell(ctx, name, cfg, tr, va, shots, seed, folder):
        trained.append(seed)
        if len(trained) == 3:
            (folder / "metrics.jsonl").parent.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\\n')  # a cell half done
            raise KeyboardInterrupt
        return real(ctx, name, cfg, tr, va, shots, seed, folder)

    monkeypatch.setattr(protocols, "train_one", killed_at_the_third_cell)
    with pytest.raises(KeyboardInterrupt):
        adapt.run("coop", "digits", tiny_model, out=str(out), store=store, **ARGS)
    cells = sorted(p.parent.name for p in out.rglob(protocols.CELL_FILE))
    assert cells == ["seed1", "seed2"] and not (out / "results-fewshot.json").exists()
    first = (out / "coop" / "1shot" / "seed1" / protocols.CELL_FILE).read_text()
    cell_lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vlkit: adapt: ")]
    assert [x.split(",")[0] for x in cell_lines[-2:]] == ["vlkit: adapt: 1/3 cells (33%)", "vlkit: adapt: 2/3 cells (67%)"]
    assert cell_lines[-2].endswith("last coop 1-shot seed 1") and cell_lines[-1].endswith("last coop 1-shot seed 2")

    trained.clear()
    resumed = adapt.run("coop", "digits", tiny_model, out=str(out), store=store, **ARGS)
    assert trained == [3]  # only the unfinished cell trained again, from the start
    err = capsys.readouterr().err
    assert f"resuming the adapt run in {out}: 2 of 3 cells finished earlier are reused" in err
    assert "last coop 1-shot seed 2 (reused)" in err and err.count("(reused)") == 2
    assert (out / "coop" / "1shot" / "seed1" / protocols.CELL_FILE).read_text() == first
    assert "2 of 3 cells were reused" in " ".join(resumed["notes"])
    assert _table(resumed) == _table(whole)  # the same numbers as a run never killed
    assert (out / "report.html").is_file()


def test_a_cell_of_another_model_is_refused_not_reused(tiny_model, cnn_model, store, tmp_path):
    from vlkit.errors import UserError

    kw = dict(ARGS, seeds=[1], progress=False, overrides=[])
    adapt.run("zeroshot", "digits", tiny_model, out=str(tmp_path), store=store, **kw)
    (tmp_path / "results-fewshot.json").unlink()
    with pytest.raises(UserError, match=r"was trained on model .*, not this run's .*overwrite=true"):
        adapt.run("zeroshot", "digits", cnn_model, out=str(tmp_path), **kw)


def test_a_second_run_with_other_methods_does_not_take_over_the_folder_of_the_first(tiny_model, store, tmp_path):
    """Methods and a protocol new to the folder still meet the saved config: replacing it would leave the first
    run unable to resume."""
    from vlkit.errors import UserError

    out = tmp_path / "grid"
    one = dict(ARGS, seeds=[1])
    adapt.run("coop", "digits", tiny_model, out=str(out), store=store, **one)
    saved = (out / "adapt_config.yaml").read_text()
    with pytest.raises(UserError, match=r"holds an adapt run with another config \(.*method.*\)"):
        adapt.run("tip_adapter", "digits", tiny_model, out=str(out), store=store, protocol="base2new",
                  **dict(one, overrides=[]))
    assert (out / "adapt_config.yaml").read_text() == saved and not (out / "tip_adapter").exists()
    again = adapt.run("coop", "digits", tiny_model, out=str(out), store=store, **one)
    assert "1 of 1 cells were reused" in " ".join(again["notes"])
