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
