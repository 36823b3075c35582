"""``engine.compile``: the compiled run trains like the eager one and saves the same names;
without a C++ compiler on CPU it is refused before training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import compile as compile_mod
from vlkit.engine import fit
from vlkit.errors import UserError


def test_compiled_run_matches_eager_and_keeps_parameter_names(tmp_path, capsys):
    torch._dynamo.reset()
    runs = {}
    for flag in (False, True):
        task = ToyTask(dropout=0.0)
        result = fit(task, toy_data(), toy_config(epochs=2, compile=flag), tmp_path / str(flag))
        runs[flag] = (task, result)
    eager, compiled = runs[False], runs[True]
    assert [r["loss"] for r in compiled[1].history] == pytest.approx([r["loss"] for r in eager[1].history],
                                                                       rel=1e-4, abs=1e-6)
    assert compiled[0].module._compiled_call_impl is not None  # it really ran compiled
    saved = load_file(compiled[1].model_path)
    assert set(saved) == set(load_file(eager[1].model_path))  # no "_orig_mod." prefixes
    assert "vlkit: torch.compile: Sequential" in capsys.readouterr().err  # the run says what it compiled


def test_compile_without_a_cxx_compiler_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="C\\+\\+ compiler.*engine.compile=false"):
        fit(ToyTask(), toy_data(), toy_config(epochs=1, compile=True), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
