"""Protocols, splits, the run API and CLI, and the errors a user can cause."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from vlkit import adapt
from vlkit.adapt.splits import fewshot, fewshot_of_classes, restrict, validation, whole
from vlkit.errors import UserError


def _draw(digits, order):
    out = {}
    for what in order:
        if what == "val":
            out[what] = validation(digits["val"], 4, 1).positions.tolist()
        else:
            k, seed = what
            out[what] = fewshot(digits["train"], k, seed).positions.tolist()
    return out


def test_fewshot_splits_do_not_depend_on_request_order(digits, monkeypatch, tmp_path):
    order = [(4, 1), "val", (1, 2), (16, 1)]
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "a"))  # no saved split JSON to hide a difference
    first = _draw(digits, order)
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "b"))
    second = _draw(digits, list(reversed(order)))
    assert first == second
    assert len(first[(4, 1)]) == 40 and first[(4, 1)] != first[(1, 2)]


def test_base_and_new_classes_are_disjoint(digits):
    from vlkit.data import base_new_split

    classes = base_new_split(digits["train"].classnames, key="digits")
    base, new = classes["base"], classes["new"]
    assert base == [0, 1, 2, 3, 4] and new == [5, 6, 7, 8, 9]  # sorted labels, first ceil(n/2) base
    tr = fewshot_of_classes(digits["train"], base, 4, 1)
    assert set(digits["train"].targets[tr.positions]) == set(base) and len(tr) == 20
    assert tr.classnames == [digits["train"].classnames[i] for i in base] and set(tr.labels) == {0, 1, 2, 3, 4}
    test = whole(digits["test"])
    tb, tn = restrict(test, base), restrict(test, new)
    assert not set(tb.positions) & set(tn.positions) and not set(tb.classnames) & set(tn.classnames)
    assert len(tb) + len(tn) == len(test)
    assert (digits["test"].targets[tn.positions] == np.asarray(new)[tn.labels]).all()


def test_fewshot_run_writes_one_table(tiny_model, store, tmp_path):
    out = adapt.run("zeroshot,coop", "digits", tiny_model, shots=[1, 2], seeds=[1, 2], views=2,
                    overrides=["epochs=2", "coop.n_ctx=2"], out=str(tmp_path), store=store)
    table = json.loads(out["paths"]["json"].read_text())
    assert [r["method"] for r in table["rows"]] == ["zeroshot", "coop"]
    assert table["columns"] == ["1-shot", "2-shot"] and len(table["records"]) == 8
    coop = [r for r in table["records"] if r["method"] == "coop" and r["shots"] == 2]
    cell = table["rows"][1]["2-shot"]
    assert cell["mean"] == pytest.approx(np.mean([r["test_acc"] for r in coop]))
    assert cell["std"] == pytest.approx(np.std([r["test_acc"] for r in coop], ddof=1))
    assert "| coop |" in out["paths"]["markdown"].read_text()
    assert (tmp_path / "coop" / "2shot" / "seed2" / "adapter" / "adapter.safetensors").is_file()
    assert (tmp_path / "adapt_config.yaml").is_file()


def test_base2new_and_domain_runs(tiny_model, store, tmp_path):
    out = adapt.run("coop,linear_probe", "digits", tiny_model, protocol="base2new", shots=[2], seeds=[1],
                    views=1, overrides=["epochs=1"], out=str(tmp_path / "b2n"), store=store)
    coop, probe = out["rows"]
    b, n = coop["base"]["mean"], coop["new"]["mean"]
    assert coop["HM"] == pytest.approx(2 * b * n / (b + n))
    assert probe["new"]["mean"] is None and "n/a" in out["paths"]["markdown"].read_text()
    out = adapt.run("clip_adapter", "digits", tiny_model, protocol="domain", shots=[1], seeds=[1], views=1,
                    overrides=["epochs=1"], out=str(tmp_path / "dom"), store=store)
    assert out["columns"] == ["source", "digits@light_on_dark=true", "target mean"]


def test_unknown_method_lists_the_registered_names(tiny_model):
    with pytest.raises(UserError) as e:
        adapt.build_method("coopp", tiny_model, ["a", "b"])
    assert "coop" in str(e.value) and "maple" in str(e.value) and "lora" in str(e.value)


def test_unknown_method_key_lists_the_valid_keys(tiny_model):
    with pytest.raises(UserError, match="valid keys: .*n_ctx"):
        adapt.make_config(method="coop", data="digits", model="preset:tiny-clip", overrides=["n_ctxx=4"])
    with pytest.raises(UserError, match="valid keys: .*class_token_position"):
        adapt.make_config(method="coop", data="digits", model="x", overrides=["coop.position=end"])
    with pytest.raises(UserError, match="valid keys: .*kg_weight"):
        adapt.build_method("kgcoop", tiny_model, ["a", "b"], None, {"lambda": 8})


def test_more_shots_than_a_class_has_names_the_class(tiny_model, store, tmp_path):
    with pytest.raises(UserError, match=r"class 'zero' has \d+ samples .* fewer than 500 shots"):
        adapt.run("zeroshot", "digits", tiny_model, shots=[500], seeds=[1], out=str(tmp_path), store=store)


def test_token_access_on_a_tower_without_tokens_is_a_clear_error(cnn_model):
    cnn = cnn_model
    with pytest.raises(UserError, match="needs token access to the vision tower"):
        adapt.build_method("maple", cnn, ["a", "b"])
    with pytest.raises(UserError, match="needs attention layers in the vision tower"):
        adapt.build_method("lora", cnn, ["a", "b"])
    lora = adapt.build_method("lora", cnn, ["a", "b"], None, {"towers": ["text"]})  # the text tower is fine
    assert not lora.uses_image_tower()


def test_cli_lists_methods_and_runs(tmp_path, capsys):
    from vlkit.adapt.cli import add_cli

    parser = argparse.ArgumentParser(prog="vlkit")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["adapt", "--list"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    assert "kgcoop:" in listing and "kg_weight = 8.0" in listing
    args = parser.parse_args(["adapt", "--method", "zeroshot", "--data", "digits", "--model", "preset:tiny-clip",
                              "--shots", "1", "--seeds", "1", "--out", str(tmp_path), "views=1"])
    assert args.func(args) == 0
    assert "| zeroshot |" in capsys.readouterr().out and (tmp_path / "results-fewshot.json").is_file()
    args = parser.parse_args(["adapt", "--method", "coop", "--data", "digits", "--model", "m", "budget=oops"])
    with pytest.raises(UserError, match="budget"):
        args.func(args)


def _recipes():
    from vlkit.recipes import RECIPES

    return sorted((RECIPES / "adapt").glob("*.yaml"))


@pytest.mark.parametrize("path", _recipes(), ids=lambda p: p.stem)
def test_shipped_configs_resolve(path):
    """Every recipe in configs/adapt names known methods, keys and a protocol; names resolve too."""
    cfg = adapt.make_config(path)
    assert cfg.method and cfg.data and cfg.model and cfg.out
    assert adapt.make_config(path.stem).method == cfg.method


def test_a_second_run_with_another_config_into_the_same_folder_needs_overwrite(tiny_model, store, tmp_path):
    adapt.run("zeroshot", "digits", tiny_model, shots=[1], seeds=[1], out=str(tmp_path), store=store)
    with pytest.raises(UserError, match=r"holds an adapt run with another config \(seeds differ\).*overwrite=true"):
        adapt.run("zeroshot", "digits", tiny_model, shots=[1], seeds=[2], out=str(tmp_path), store=store)
    out = adapt.run("zeroshot", "digits", tiny_model, shots=[1], seeds=[2], out=str(tmp_path), store=store,
                    overrides=["overwrite=true"])
    assert out["paths"]["json"].is_file() and out["records"][0]["seed"] == 2
    assert not (tmp_path / "zeroshot" / "1shot" / "seed1").exists()  # the other run's cells went
