"""``engine.log_to``: TensorBoard events read back, Weights & Biases through a fake module (offline
by default, never the network), and the one-line error naming the extra when one is missing."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from engine_toy import ToyTask, toy_config, toy_data
from vlkit import config as vconfig
from vlkit.engine import EngineConfig, fit
from vlkit.engine.logger import RunLogger, read_metrics
from vlkit.errors import UserError


def test_log_to_parses_the_command_line_form_and_names_the_valid_trackers():
    cfg = vconfig.build(EngineConfig, {"log_to": "tensorboard,wandb"})
    assert cfg.log_to == ["tensorboard", "wandb"]
    assert vconfig.build(EngineConfig, {"log_to": ""}).log_to == []
    with pytest.raises(UserError, match=r"log_to\[0\]: 'mlflow' is not one of 'tensorboard', 'wandb'"):
        vconfig.build(EngineConfig, {"log_to": "mlflow"})
    # the old switch still means TensorBoard, once
    assert EngineConfig(tensorboard=True).trackers() == ["tensorboard"]
    assert EngineConfig(tensorboard=True, log_to=["tensorboard"]).trackers() == ["tensorboard"]
    assert EngineConfig().trackers() == []


@pytest.mark.parametrize("name, extra", [("wandb", "wandb"), ("tensorboard", "tensorboard")])
def test_a_missing_tracker_is_one_line_naming_its_extra(monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(UserError) as err:
        EngineConfig(log_to=[name]).validate()
    assert str(err.value) == (f"engine.log_to={name} needs the {name} package, which is not installed; "
                              f"pip install 'vlkit[{extra}]' (or drop {name} from engine.log_to)")


def test_tensorboard_events_hold_the_metrics_lines(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = fit(ToyTask(), toy_data(n=32), toy_config(epochs=1, log_to=["tensorboard"], checkpoint_every=0),
              tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and res.step == 4
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/mse_loss", "train/lr", "train/epoch"} <= set(events.Tags()["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)


class FakeWandb:
    """What vlkit calls of wandb: init(...) -> run; run.log(dict, step=); run.finish()."""

    def __init__(self):
        self.module = types.ModuleType("wandb")
        self.module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.module.init = self.init
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        run = types.SimpleNamespace(log=lambda data, step: self.logged.append((step, data)),
                                    finish=self.finish)
        return run

    def finish(self):
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake.module)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return fake


def test_wandb_is_offline_by_default_and_gets_each_metrics_line(tmp_path, fake_wandb):
    out = tmp_path / "my-run"
    fit(ToyTask(), toy_data(n=16), toy_config(epochs=1, log_to=["wandb"], wandb_project="moji",
                                              checkpoint_every=0), out)
    (init,) = fake_wandb.inits
    assert (init["mode"], init["project"], init["name"], init["dir"]) == ("offline", "moji", "my-run", str(out))
    assert init["config"]["log_to"] == ["wandb"] and init["config"]["batch_size"] == 8
    rows = read_metrics(out / "metrics.jsonl")
    assert [step for step, _ in fake_wandb.logged] == [r["step"] for r in rows] == [1, 2]
    assert [data["train/loss"] for _, data in fake_wandb.logged] == [r["loss"] for r in rows]
    assert "train/step" not in fake_wandb.logged[0][1]
    assert fake_wandb.finished == 1


def test_wandb_mode_comes_from_the_environment_when_set(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    log = RunLogger(tmp_path, enabled=True, total_steps=1, progress=False, log_to=["wandb"])
    log.log({"step": 1, "loss": 0.5, "flag": True})
    log.close()
    assert fake_wandb.inits[0]["mode"] == "online"
    assert fake_wandb.logged == [(1, {"train/loss": 0.5})]  # booleans are not series


def test_only_rank_zero_opens_trackers(tmp_path, fake_wandb):
    log = RunLogger(tmp_path, enabled=False, total_steps=1, progress=False, log_to=["wandb"])
    log.log({"step": 1, "loss": 0.5})
    log.close()
    assert fake_wandb.inits == [] and fake_wandb.logged == []
