"""The shared core: typed configs, registries, and the CLI's handling of user errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vlkit import config
from vlkit.cli import main
from vlkit.errors import UserError
from vlkit.registry import Registry


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    name: str = "adamw"


@dataclass
class Run:
    steps: int = 10
    seeds: list[int] = field(default_factory=lambda: [1])
    optim: Optim = field(default_factory=Optim)
    note: str | None = None


def test_config_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.01\n")
    cfg = config.load(path, Run, ["optim.lr=5e-4", "seeds=1,2,3", "optim.betas=[0.5, 0.9]"])
    assert cfg.steps == 5
    assert cfg.optim.lr == pytest.approx(5e-4)
    assert cfg.seeds == [1, 2, 3]
    assert cfg.optim.betas == (0.5, 0.9)
    saved = config.save(cfg, tmp_path / "out" / "config.yaml")
    assert config.load(saved, Run) == cfg


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match=r"unknown config key 'optim.lrr'.*valid keys: betas, lr, name"):
        config.build(Run, config.apply_overrides({}, ["optim.lrr=1"]))


def test_wrong_type_is_refused():
    with pytest.raises(UserError, match="steps: expected an integer"):
        config.build(Run, {"steps": "many"})
    with pytest.raises(UserError, match="lr: expected a number"):
        config.build(Run, {"optim": {"lr": "fast"}})


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not key=value"):
        config.apply_overrides({}, ["optim.lr"])
    with pytest.raises(UserError, match="config file not found"):
        config.load(tmp_path / "nope.yaml", Run)
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad, Run)


def test_registry_rejects_duplicates_and_lists_names():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    class Alpha:
        pass

    with pytest.raises(ValueError, match="duplicate widget name 'alpha'"):
        reg.register("alpha")(Alpha)
    with pytest.raises(UserError, match=r"unknown widget 'alpah' \(did you mean 'alpha'\?\); valid: alpha"):
        reg.get("alpah")


def test_cli_user_error_is_one_line(capsys):
    rc = main(["models", "info", "preset:no-such-preset"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("vlkit: error: ") and "\n" not in err
    assert "Traceback" not in err
