"""Pretraining recipes: they parse, run from the CLI, learn, and never re-encode frozen towers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlkit import pretrain
from vlkit.cli import main
from vlkit.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))

QUICK = ["engine.progress=false", "engine.tensorboard=false", "engine.checkpoint_every=0"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_opens_with_its_command(recipe):
    cfg = pretrain.load_config(recipe)
    assert cfg.objectives, "a recipe names at least one objective"
    first = recipe.read_text().splitlines()[0]
    assert first == f"# vlkit pretrain configs/pretrain/{recipe.name}"


def test_unknown_objective_lists_valid_names(tmp_path):
    cfg = pretrain.load_config(None, ["objectives=[{name: clipp}]", f"out_dir={tmp_path}"])
    with pytest.raises(UserError, match="unknown objective 'clipp'.*valid: .*siglip"):
        pretrain.run(cfg)


def test_tiny_clip_learns_on_shapes_from_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", str(ROOT / "configs/pretrain/shapes-clip.yaml"), "model=preset:tiny-clip",
            "data.max_samples=32", "data.caption=first", "objectives=[{name: clip}]", "engine.steps=25",
            "engine.batch_size=32", "engine.optim.lr=0.001", "engine.optim.weight_decay=0",
            "engine.schedule.warmup_steps=3",
            "engine.log_every=1", "eval.data=null", f"out_dir={out}", *QUICK]
    assert main(args) == 0
    assert "model saved to" in capsys.readouterr().out
    import json

    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = lines[0]["loss"], sum(l["loss"] for l in lines[-5:]) / 5
    assert last < first - 0.8, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert (out / "model" / "config.json").is_file() and (out / "config.yaml").is_file()
    # a second fresh run into the same directory would mix two runs: refused, nothing lost
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_lightclip_recipe_trains_its_token_term(tmp_path):
    """shapes-clip's LightCLIP objective gets both towers' tokens, so its patch-word term trains."""
    import json

    def run(out, *extra):
        cfg = pretrain.load_config(ROOT / "configs/pretrain/shapes-clip.yaml", [
            "model=preset:tiny-clip", "data.max_samples=32", "engine.steps=2", "engine.batch_size=16",
            "engine.schedule.warmup_steps=1", "engine.log_every=1", "eval.data=null",
            f"out_dir={tmp_path / out}", *QUICK, *extra])
        pretrain.run(cfg)
        return [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    logged = run("tokens")
    assert all(line["lightclip.token_loss"] > 0 for line in logged)
    off = run("no-tokens", "objectives=[{name: lightclip, token_weight: 0}]")
    assert not any("lightclip.token_loss" in line for line in off)


def test_token_objective_with_a_tower_without_tokens_is_one_clear_error(tmp_path):
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit.yaml", [
        "model=preset:moji-lit-cnn", "objectives=[{name: lightclip}]", "data.max_samples=32",
        "engine.steps=2", "engine.batch_size=16", "engine.schedule.warmup_steps=1", "eval.data=null",
        f"out_dir={tmp_path}", *QUICK])
    with pytest.raises(UserError, match="no tokens"):
        pretrain.run(cfg)


def test_frozen_text_tower_is_encoded_once_not_every_step(tmp_path, monkeypatch):
    """LiT: MiniLM's features of every caption come from the cache; it never runs in a step."""
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit.yaml", [
        "data.max_samples=64", "engine.steps=4", "engine.batch_size=16", "engine.schedule.warmup_steps=1",
        "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    from vlkit.pretrain import runner

    calls = {"text": 0, "steps": 0}
    real_fit = runner.fit

    def counting_fit(task, data, engine_cfg, out_dir, **kw):
        model = task.module.model
        text_forward = model.text.forward

        def counted(*a, **k):
            calls["text"] += 1
            return text_forward(*a, **k)

        model.text.forward = counted
        result = real_fit(task, data, engine_cfg, out_dir, **kw)
        calls["steps"] = result.step
        return result

    monkeypatch.setattr(runner, "fit", counting_fit)
    result = pretrain.run(cfg)
    assert result.cached == {"text": True, "image": False, "stage_views": 0}
    assert calls["steps"] == 4 and calls["text"] == 0
    frozen = result.fit  # the text tower's weights did not move
    model = __import__("vlkit").models.load(result.model_dir)
    fresh = __import__("vlkit").models.load("preset:moji-lit-s")
    for (name, a), (_, b) in zip(model.text.state_dict().items(), fresh.text.state_dict().items()):
        assert torch.equal(a, b), name
    assert frozen.step == 4


def test_sail_trains_only_gated_heads_on_cached_features_and_reloads(tmp_path):
    """SAIL: both towers frozen and encoded once; new gated-MLP heads train; the model reloads."""
    from vlkit import models

    base = models.load("preset:moji-lit-s").save(tmp_path / "base")
    cfg = pretrain.load_config(ROOT / "configs/pretrain/sail.yaml", [
        f"model={base}", "data.max_samples=64", "engine.steps=15", "engine.batch_size=32",
        "engine.schedule.warmup_steps=1", "engine.log_every=1", "eval.data=null",
        f"out_dir={tmp_path / 'run'}", *QUICK])
    result = pretrain.run(cfg)
    assert result.cached == {"text": True, "image": True, "stage_views": 0}
    losses = [h["loss"] for h in result.fit.history]
    assert losses[-1] < losses[0] * 0.8, losses
    reloaded = models.load(result.model_dir)
    assert type(reloaded.image_proj).__name__ == "GatedMLP" and type(reloaded.text_proj).__name__ == "GatedMLP"
    trained, fresh = reloaded.visual.state_dict(), models.load(base).visual.state_dict()
    assert all(torch.equal(trained[k], fresh[k]) for k in fresh), "the frozen image tower moved"


def test_text_bank_contrasts_images_with_every_cached_caption(tmp_path, monkeypatch):
    """LiT with text_negatives: bank: the bank is the cached feature of every caption the data can
    draw (the first of each with data.caption=first), fixed for the run; training lowers the loss."""
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit.yaml", [
        "objectives=[{name: clip, text_negatives: bank}]", "data.caption=first", "data.max_samples=48",
        "engine.steps=15", "engine.batch_size=16", "engine.schedule.warmup_steps=1", "engine.log_every=1",
        "engine.optim.lr=0.001", "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    from vlkit.pretrain import runner

    seen = {}
    real_fit = runner.fit

    def spying_fit(task, data, engine_cfg, out_dir, **kw):
        seen["task"] = task
        return real_fit(task, data, engine_cfg, out_dir, **kw)

    monkeypatch.setattr(runner, "fit", spying_fit)
    result = pretrain.run(cfg)
    task = seen["task"]
    names = list(dict.fromkeys(runner._dataset(cfg).captions_at(i)[0] for i in range(48)))
    assert list(task.bank_pos) == names  # every drawable caption, once, nothing else
    torch.testing.assert_close(task.bank, task.text_cache.lookup(names))
    import json

    losses = [json.loads(l)["loss"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert result.cached["text"]


def test_text_bank_without_a_cached_text_tower_is_one_clear_error(tmp_path):
    cfg = pretrain.load_config(ROOT / "configs/pretrain/shapes-clip.yaml", [
        "model=preset:tiny-clip", "objectives=[{name: clip, text_negatives: bank}]", "engine.steps=2",
        "engine.schedule.warmup_steps=0",
        "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    with pytest.raises(UserError, match="text_negatives: bank needs a locked text tower"):
        pretrain.run(cfg)


def test_pretraining_runs_the_trainable_tower_in_train_mode(tmp_path, monkeypatch):
    """Batch norm in the moji-lit image stem normalises with batch statistics while training
    and keeps running statistics for evaluation; the frozen text tower stays in eval mode."""
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit.yaml", [
        "data.max_samples=32", "engine.steps=2", "engine.batch_size=16", "engine.schedule.warmup_steps=1",
        "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    from vlkit.pretrain import runner

    modes = []
    real_fit = runner.fit

    def spying_fit(task, data, engine_cfg, out_dir, **kw):
        model = task.module.model
        modes.append((model.visual.training, model.text.training))
        return real_fit(task, data, engine_cfg, out_dir, **kw)

    monkeypatch.setattr(runner, "fit", spying_fit)
    result = pretrain.run(cfg)
    assert modes == [(True, False)]
    model = __import__("vlkit").models.load(result.model_dir)
    bn = [m for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert bn.num_batches_tracked.item() == 2 and bn.running_mean.abs().sum() > 0


def test_engine_compile_targets_the_towers_a_step_runs():
    """engine.compile compiles the towers a step runs, never one read from the feature cache."""
    import vlkit.models
    from vlkit.objectives import build
    from vlkit.pretrain.task import ContrastiveModule, ContrastiveTask

    model = vlkit.models.load("preset:tiny-clip")
    module = ContrastiveModule(model, build([{"name": "clip"}]))
    assert ContrastiveTask(module).compile_targets() == [model.visual, model.text]
    assert ContrastiveTask(module, text_cache=object()).compile_targets() == [model.visual]
    assert ContrastiveTask(module, text_cache=object(), image_cache=object()).compile_targets() == []
