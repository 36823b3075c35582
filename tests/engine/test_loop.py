"""The training loop: it learns, sums the loss terms, calls hooks in order, logs, stops early,
stops on a NaN loss keeping the last good checkpoint, and picks a precision the CPU can run."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import EngineConfig, Hook, ModuleTask, fit, list_checkpoints, loss_terms
from vlkit.engine import precision as precision_mod
from vlkit import config as vconfig
from vlkit.errors import UserError


def test_fit_learns_and_writes_metrics_checkpoints_and_weights(tmp_path):
    task = ToyTask(dropout=0.0)
    result = fit(task, toy_data(), toy_config(epochs=6, checkpoint_every=10, keep_last=2), tmp_path)
    assert result.step == 48 and result.epoch == 6  # 64 samples / 8 per batch, 6 epochs
    losses = [r["loss"] for r in result.history]
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])  # the last epoch is far below the first

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 49))
    keys = {"step", "epoch", "lr", "loss", "mse_loss", "l1_loss", "samples_per_s", "time"}
    assert keys <= set(lines[0])
    assert lines[-1]["epoch"] == 5 and lines[-1]["samples_per_s"] > 0
    assert result.losses["loss"] == pytest.approx(lines[-1]["loss"])

    # keep_last=2: the periodic checkpoint at 40 and the final one at 48.
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000040.pt", "step_00000048.pt"]
    assert result.checkpoint == tmp_path / "checkpoints" / "step_00000048.pt"
    weights = load_file(result.model_path)
    for name, tensor in task.module.state_dict().items():
        assert torch.equal(weights[name], tensor)
    assert (tmp_path / "engine_config.yaml").is_file()


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, batch):
        acc = torch.tensor(0.75)
        return {"a_loss": self.w**2, "b_loss": 3 * self.w, "acc": acc, "logits": batch[0]}


def test_loss_is_the_sum_of_the_loss_terms_and_other_scalars_are_logged(tmp_path):
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    cfg = toy_config(steps=1, optim=sgd, schedule=None)
    task = ModuleTask(Scalar())
    result = fit(task, toy_data(), cfg, tmp_path)
    # d/dw (w^2 + 3w) at w=1 is 5: one SGD step of lr 0.1 gives 0.5.
    assert task.module.w.item() == pytest.approx(0.5)
    assert result.losses == pytest.approx({"loss": 4.0, "a_loss": 1.0, "b_loss": 3.0, "acc": 0.75})
    with pytest.raises(UserError, match="no 'loss' and no '\\*_loss' key"):
        loss_terms({"logits": torch.zeros(2, 2)})


class Recorder(Hook):
    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def on_fit_start(self, state):
        self.calls.append((self.name, "fit_start", state.step))

    def on_step_end(self, state):
        self.calls.append((self.name, "step", state.step))

    def on_epoch_end(self, state):
        self.calls.append((self.name, "epoch", state.epoch))

    def on_checkpoint(self, state, path):
        self.calls.append((self.name, "checkpoint", path.name))

    def on_fit_end(self, state):
        self.calls.append((self.name, "fit_end", state.step))


def test_hooks_run_in_order_task_first(tmp_path):
    calls, progress = [], []

    class Task(ToyTask):
        def training_step(self, batch, state):
            progress.append(state.progress)
            return super().training_step(batch, state)

        def on_epoch_end(self, state):
            calls.append(("task", "epoch", state.epoch))

    data = toy_data(n=24)  # 3 batches per epoch
    fit(Task(), data, toy_config(epochs=2, checkpoint_every=3), tmp_path,
        hooks=[Recorder(calls, "a"), Recorder(calls, "b")])
    a = [c[1:] for c in calls if c[0] == "a"]
    assert a == [("fit_start", 0), ("step", 1), ("step", 2), ("step", 3), ("epoch", 0),
                 ("checkpoint", "step_00000003.pt"), ("step", 4), ("step", 5), ("step", 6),
                 ("epoch", 1), ("checkpoint", "step_00000006.pt"), ("fit_end", 6)]
    epoch_ends = [c[0] for c in calls if c[1] == "epoch"]
    assert epoch_ends == ["task", "a", "b", "task", "a", "b"]
    assert progress == pytest.approx([i / 6 for i in range(6)])


def test_a_hook_can_stop_early_and_add_metrics(tmp_path):
    class EarlyStop(Hook):
        def on_step_end(self, state):
            if state.step == 3:
                state.record(val_acc=0.5)
                state.should_stop = True

    result = fit(ToyTask(), toy_data(), toy_config(epochs=5, log_every=100), tmp_path,
                 hooks=[EarlyStop()])
    assert result.stopped_early and result.step == 3
    assert result.history[-1]["val_acc"] == 0.5 and result.history[-1]["step"] == 3
    assert result.checkpoint.name == "step_00000003.pt" and result.checkpoint.is_file()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    digests = {}

    class Digest(Hook):
        def on_checkpoint(self, state, path):
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()

    with pytest.raises(UserError) as e:
        fit(ToyTask(nan_at_step=7), toy_data(), toy_config(checkpoint_every=3), tmp_path,
            hooks=[Digest()])
    msg = str(e.value)
    last_good = tmp_path / "checkpoints" / "step_00000006.pt"
    assert "not finite at step 7" in msg and "mse_loss=nan" in msg and str(last_good) in msg
    assert "\n" not in msg
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt", "step_00000006.pt"]
    assert hashlib.sha256(last_good.read_bytes()).hexdigest() == digests[last_good.name]
    assert not (tmp_path / "model.safetensors").exists()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_default_optimizer_and_warmup_cosine_schedule_from_the_config(tmp_path):
    cfg = toy_config(steps=10, optim={"name": "adamw", "lr": 0.01},
                     schedule={"name": "cosine", "warmup_steps": 2})
    lrs = [r["lr"] for r in fit(ToyTask(custom_optim=False), toy_data(), cfg, tmp_path).history]
    assert lrs[0] < lrs[1] == pytest.approx(0.01)  # linear warm-up over 2 steps
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.001  # cosine decay
    with pytest.raises(UserError, match="unknown config key 'optim.lrr'.*valid keys"):
        fit(ToyTask(custom_optim=False), toy_data(), toy_config(optim={"lrr": 1.0}), tmp_path)


def test_auto_precision_falls_back_to_fp32_on_a_cpu_without_fast_bf16(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: False)
    for asked in ("auto", "bf16", "amp"):
        p = precision_mod.resolve_precision(asked, "cpu")
        assert p.name == "fp32" and p.dtype is None and p.scaler is None
        assert "bf16 autocast would be slower than fp32" in p.note
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: True)
    p = precision_mod.resolve_precision("auto", "cpu")
    with p.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        precision_mod.resolve_precision("fp8", "cpu")


def test_one_note_line_then_a_progress_bar_with_loss_lr_and_speed(tmp_path, capsys, monkeypatch):
    from vlkit.engine import progress

    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)  # a terminal: the tqdm bar
    fit(ToyTask(), toy_data(), toy_config(steps=3, precision="bf16", progress=True), tmp_path)
    err = capsys.readouterr().err
    notes = [x for x in err.splitlines() if "vlkit: " in x]
    assert len(notes) == 1 and notes[0].startswith("vlkit: precision bf16: training in fp32")
    assert "3/3" in err and "loss=" in err and "lr=" in err and "samples/s=" in err


def test_off_a_terminal_training_logs_a_line_every_few_seconds_not_one_per_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLKIT_PROGRESS_EVERY", "1000")  # no interval passes: only the closing line
    fit(ToyTask(), toy_data(), toy_config(steps=30, progress=True), tmp_path / "a")
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vlkit: training:")]
    assert len(lines) == 1 and lines[0].startswith("vlkit: training: 30/30 steps (100%), ")
    assert ", loss " in lines[0] and ", lr " in lines[0] and lines[0].endswith("(done)")
    monkeypatch.setenv("VLKIT_PROGRESS_EVERY", "0")  # every update
    fit(ToyTask(), toy_data(), toy_config(steps=30, progress=True), tmp_path / "b")
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vlkit: training:")]
    assert [x.split(" steps")[0] for x in lines] == [f"vlkit: training: {i}/30" for i in range(1, 31)]


def test_engine_config_builds_from_yaml_style_mappings():
    cfg = vconfig.build(EngineConfig, {"steps": 5, "precision": "bf16", "optim": {"lr": 1e-3}})
    assert cfg.steps == 5 and cfg.optim == {"lr": 1e-3}
    with pytest.raises(UserError, match="precision: 'fp8' is not one of"):
        vconfig.build(EngineConfig, {"precision": "fp8"})
    with pytest.raises(UserError, match="unknown config key 'epoch'"):
        vconfig.build(EngineConfig, {"epoch": 3})


def test_config_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="epochs must be >= 1"):
        fit(ToyTask(), toy_data(), EngineConfig(epochs=0), tmp_path)
    frozen = ToyTask()
    frozen.module.requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameters"):
        fit(frozen, toy_data(), toy_config(), tmp_path)


def test_dataset_batches_tell_an_epoch_aware_collate_its_epoch():
    """Per-epoch caption choice and crops (vlkit.data.collate) depend on hearing the epoch."""
    from vlkit.engine import DatasetBatches

    class Collate:
        def __init__(self):
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __call__(self, items):
            return (self.epoch, list(items))

    collate = Collate()
    source = DatasetBatches(list(range(8)), 4, collate, seed=0)
    assert [b[0] for b in source.batches(3)] == [3, 3]
    assert [b[0] for b in source.batches(5, start=1)] == [5]
