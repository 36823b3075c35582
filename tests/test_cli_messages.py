"""Messages that tell a user what to do: a missing model folder names the command that writes it."""

from __future__ import annotations

import pytest

from vlkit import models
from vlkit.errors import UserError


@pytest.mark.parametrize("spec, message", [
    ("runs/moji-lit/model", "model folder runs/moji-lit/model not found; run `vlkit pretrain moji-lit` first"),
    ("runs/shapes-clip/model", "model folder runs/shapes-clip/model not found; run `vlkit pretrain shapes-clip` first"),
    ("runs/demo/model", "model folder runs/demo/model not found; run `vlkit demo` first"),
    ("elsewhere/model", "model folder elsewhere/model not found; check the path, or train one first"),
])
def test_a_missing_model_folder_says_which_command_writes_it(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    with pytest.raises(UserError) as e:
        models.load(spec)
    assert str(e.value).startswith(message) and "unknown model spec" not in str(e.value)


def test_a_word_that_is_no_spec_still_lists_the_spec_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"unknown model spec 'tiny-clipp'; use preset:NAME \(one of .*tiny-clip"):
        models.load("tiny-clipp")


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_pretrain_prints_its_summary_on_rank_0_only(rank, printed, monkeypatch, capsys, tmp_path):
    from types import SimpleNamespace

    from vlkit import pretrain
    from vlkit.cli import main

    fit = SimpleNamespace(step=7, steps_planned=9, samples_per_s=12.5)
    result = SimpleNamespace(fit=fit, model_dir=tmp_path / "model", metrics={"metrics": {"retrieval/r1": 0.25}})
    monkeypatch.setattr(pretrain, "run", lambda cfg, resume=False: result)
    monkeypatch.setenv("RANK", rank)  # what torchrun sets in each process
    assert main(["pretrain", "shapes-clip", f"out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert ("trained 7 of 9 steps (12.5 samples/s)" in out and "retrieval/r1" in out) == printed
    assert out == "" or printed
