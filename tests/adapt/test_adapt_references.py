"""Each method's defaults are its reference's: LoRA's scale and optimiser, per-method optimiser
settings, the model reported (last epoch or best on validation), the augmentation (crop scale,
flips only where the data allow), the CLIP / CoOp linear probe, CoOp-CSC's and MaPLe's inits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from vlkit import adapt
from vlkit.adapt.methods.linear_probe import COARSE_C, bisect_c
from vlkit.adapt.training import FeatureBatches, augmentation, engine_config, selection_of, train
from vlkit.engine.optim import OptimConfig, build_optimizer
from vlkit.errors import UserError

NAMES = ["zero", "one", "two", "three"]


# -- LoRA ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank_scaling,rank,alpha,expected", [
    ("sqrt", 4, 2.0, 2.0 / 2.0),  # CLIP-LoRA: alpha / sqrt(r)
    ("sqrt", 2, 1.0, 1.0 / math.sqrt(2)),  # its defaults
    ("linear", 4, 2.0, 2.0 / 4),  # Hu et al.: alpha / r
])
def test_lora_update_scale(tiny_model, rank_scaling, rank, alpha, expected):
    lora = adapt.build_method("lora", tiny_model, NAMES, None,
                              {"rank": rank, "alpha": alpha, "rank_scaling": rank_scaling, "dropout": 0.0})
    t = lora.targets[0]
    assert t.factors.scaling == pytest.approx(expected)
    with torch.no_grad():
        for b in t.factors.B:
            b.normal_()
        x = torch.randn(3, t.factors.in_features)
        a, b = t.factors.A[0], t.factors.B[0]
        by_hand = expected * (x @ a.T @ b.T)  # the first block's update, (3, size)
        offset, size = t.factors.blocks[0]
        assert torch.allclose(t.factors.delta_out(x)[:, offset:offset + size], by_hand, atol=1e-5)


def test_lora_defaults_are_clip_loras():
    cfg = adapt.build_config("lora")
    assert (cfg.rank, cfg.alpha, cfg.rank_scaling, cfg.dropout) == (2, 1.0, "sqrt", 0.25)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, list(cfg.betas), cfg.eps) == ("adamw", 2e-4, 1e-2, [0.9, 0.999], 1e-8)
    assert (cfg.schedule, cfg.warmup_epochs, cfg.min_lr, cfg.selection) == ("cosine", 0, 1e-6, "last")
    assert (list(cfg.aug_scale), cfg.flip) == ([0.08, 1.0], True)
    assert adapt.get_method("lora").paper_schedule(4) == {"steps": 2000}


def test_lora_rank_scaling_must_be_known(tiny_model):
    with pytest.raises(UserError, match="rank_scaling"):
        adapt.build_method("lora", tiny_model, NAMES, None, {"rank_scaling": "cubic"})


# -- optimiser settings per method ---------------------------------------------------------------
class _Data:
    batch_size = 4

    def __len__(self):
        return 10


def _optimizer_of(method, run_settings):
    ecfg = engine_config(method, _Data(), {"epochs": 2}, 1.0, 0, run_settings)
    return ecfg, build_optimizer(method, OptimConfig(**ecfg.optim))


@pytest.mark.parametrize("name,kind,expected", [
    ("lora", torch.optim.AdamW, {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8}),
    ("tip_adapter_f", torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-4}),
    ("coop", torch.optim.SGD, {"lr": 2e-3, "momentum": 0.9}),
    ("maple", torch.optim.SGD, {"lr": 3.5e-3, "momentum": 0.9}),
])
def test_each_method_gets_its_references_optimiser(tiny_model, run_settings, name, kind, expected):
    method = adapt.build_method(name, tiny_model, NAMES, None)
    _, opt = _optimizer_of(method, run_settings)
    assert isinstance(opt, kind)
    group = opt.param_groups[0]
    for key, value in expected.items():
        got = group[key]
        assert (tuple(got) if isinstance(got, (tuple, list)) else got) == pytest.approx(value), key
    decay = {"lora": 1e-2, "tip_adapter_f": 1e-2, "coop": 5e-4, "maple": 5e-4}[name]
    assert [g["weight_decay"] for g in opt.param_groups if g["group"] == "decay"] == [decay]


def test_optimiser_keys_are_overridable(tiny_model, run_settings):
    method = adapt.build_method("lora", tiny_model, NAMES, None, {"betas": [0.9, 0.98], "eps": 1e-6})
    _, opt = _optimizer_of(method, run_settings)
    assert opt.param_groups[0]["betas"] == (0.9, 0.98) and opt.param_groups[0]["eps"] == 1e-6
    with pytest.raises(UserError, match="betas"):
        adapt.build_config("lora", {"betas": [0.9, 1.5]})


# -- model selection -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("coop", "last"), ("coop_csc", "last"), ("cocoop", "last"), ("kgcoop", "last"), ("maple", "last"),
    ("clip_adapter", "last"), ("lora", "last"), ("tip_adapter_f", "val"), ("zs_linear_probe", "val"),
    ("zeroshot", None), ("tip_adapter", None), ("linear_probe", None),
])
def test_default_selection_is_the_references(tiny_model, run_settings, name, expected):
    method = adapt.build_method(name, tiny_model, NAMES, None)
    assert selection_of(method, run_settings) == expected
    if expected is not None:
        assert selection_of(method, replace(run_settings, selection="val")) == "val"
        assert selection_of(method, replace(run_settings, selection="last")) == "last"
    with pytest.raises(UserError, match="selection"):
        adapt.build_config("coop", {"selection": "best"})


def test_last_epoch_is_reported_unless_validation_selection_is_asked(tiny_model, task, store, run_settings, tmp_path):
    classes = task["train"].classnames
    coop = adapt.build_method("coop", tiny_model, classes, None, {"epochs": 4, "n_ctx": 2, "lr": 0.05})
    info = train(coop, task["train"], task["val"], store, run_settings, 2, 1, tmp_path / "last")
    assert info["selection"] == "last epoch" and info["best_epoch"] is None and "val_curve" not in info
    again = adapt.build_method("coop", tiny_model, classes, None, {"epochs": 4, "n_ctx": 2, "lr": 0.05})
    info = train(again, task["train"], task["val"], store, replace(run_settings, val_evals=4), 2, 1, tmp_path / "v")
    assert info["best_epoch"] is None  # same run settings: the reference's choice again
    picked = adapt.build_method("coop", tiny_model, classes, None, {"epochs": 4, "n_ctx": 2, "lr": 0.05,
                                                                    "selection": "val"})
    info = train(picked, task["train"], task["val"], store, replace(run_settings, val_evals=4), 2, 1, tmp_path / "val")
    assert info["selection"] == "best validation epoch" and [e for e, _ in info["val_curve"]] == [1, 2, 3, 4]
    best = max(info["val_curve"], key=lambda c: c[1])
    assert info["best_epoch"] == best[0]


# -- augmentation ----------------------------------------------------------------------------------
def test_flips_only_where_the_dataset_allows(tiny_model, digits, run_settings):
    from vlkit.adapt.splits import load_split

    shapes = load_split("shapes:color", "train")
    assert digits["train"].flip_safe is False and shapes.flip_safe is True
    coop = adapt.build_method("coop", tiny_model, NAMES, None)
    on_digits = augmentation(coop, digits["train"], run_settings, epochs=5)
    assert (on_digits.mode, on_digits.scale, on_digits.flip, on_digits.flip_refused) == ("views", (0.08, 1.0), False, True)
    assert on_digits.n_views == run_settings.views and "no flip (the data declares flips unsafe)" in on_digits.describe()
    on_shapes = augmentation(coop, shapes, run_settings, epochs=5)
    assert on_shapes.flip is True and not on_shapes.flip_refused
    forced = augmentation(coop, digits["train"], replace(run_settings, flip=True, aug_scale=[0.5, 0.9]), epochs=5)
    assert forced.flip is True and forced.scale == (0.5, 0.9)
    off = augmentation(coop, shapes, replace(run_settings, flip=False), epochs=5)
    assert off.flip is False and not off.flip_refused
    tip = adapt.build_method("tip_adapter", tiny_model, NAMES, None)
    assert augmentation(tip, shapes, run_settings, epochs=0).scale == (0.5, 1.0)  # Tip-Adapter's crops
    fresh = augmentation(coop, shapes, replace(run_settings, augment="fresh"), epochs=7)
    assert (fresh.mode, fresh.n_views) == ("fresh", 7)
    assert augmentation(tip, shapes, replace(run_settings, augment="fresh"), epochs=0).mode == "views"  # nothing to train
    lp = adapt.build_method("linear_probe", tiny_model, NAMES, None)
    assert augmentation(lp, shapes, run_settings, epochs=0).mode == "eval"


def test_training_views_use_the_methods_transform(tiny_model, task, store, run_settings, tmp_path):
    seen = []
    original = store.view_features

    def spy(dataset, positions, n_views, transform=None):
        seen.append((n_views, repr(transform)))
        return original(dataset, positions, n_views, transform)

    store.view_features = spy
    try:
        coop = adapt.build_method("coop", tiny_model, task["train"].classnames, None, {"epochs": 3, "n_ctx": 2})
        info = train(coop, task["train"], None, store, replace(run_settings, augment="fresh"), 2, 1, tmp_path / "c")
    finally:
        del store.view_features
    assert seen == [(3, repr(store.train_transform([0.08, 1.0], hflip=False)))]  # digits: no flip
    assert "random_resized_crop(scale=0.08-1)" in seen[0][1]
    assert info["augmentation"] == "a fresh cached view per epoch (3), crops 0.08-1, no flip (the data declares flips unsafe)"


def test_fresh_batches_use_view_epoch_for_every_image():
    views = torch.arange(3)[:, None, None].float().expand(3, 8, 2).clone()  # view v holds the value v
    data = FeatureBatches(views, torch.zeros(8), batch_size=4, seed=0, per_epoch=True)
    for epoch in range(5):
        for batch in data.batches(epoch):
            assert (batch["image_embeds"] == epoch % 3).all()
    shared = FeatureBatches(views, torch.zeros(8), batch_size=8, seed=0)
    drawn = torch.cat([b["image_embeds"][:, 0] for e in range(4) for b in shared.batches(e)])
    assert len(drawn.unique()) > 1  # the fast path draws a view per image


def test_imagefolder_declares_flips_safe_unless_told(tmp_path):
    from PIL import Image

    from vlkit import data

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / cls / "a.png")
    assert data.load(f"imagefolder={tmp_path}").flip_safe is True
    assert data.load(f"imagefolder={tmp_path}", flip_safe=False).flip_safe is False
    assert data.load("openmoji:group", split="test").flip_safe is False


# -- the CLIP / CoOp linear probe ------------------------------------------------------------------
def test_bisection_follows_lpclip():
    """acc(C) = -|log10 C - 0.3|: peak 1 from the coarse pass, then by hand:
    [-1, 1]: -1.3 < -0.7, keep 10, interval [0, 1]; [0, 1]: -0.3 > -0.7, keep 1, interval [0, 0.5];
    [0, 0.5]: -0.3 < -0.2, keep 10^0.5, interval [0.25, 0.5]."""
    tried = []

    def acc(c):
        tried.append(round(math.log10(c), 6))
        return -abs(math.log10(c) - 0.3)

    chosen, log = bisect_c(acc, 1.0, 3)
    assert tried == [-1, 1, 0, 1, 0, 0.5]
    assert chosen == pytest.approx(10 ** 0.5)
    tie, _ = bisect_c(lambda c: 0.5, 1.0, 1)  # a tie keeps the left end (smaller C)
    assert tie == pytest.approx(0.1)
    assert COARSE_C == (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


def test_linear_probe_is_sklearns_logistic_regression_with_the_searched_c(tiny_model, task, store):
    from sklearn.linear_model import LogisticRegression

    tr, va = task["train"], task["val"]
    probe = adapt.build_method("linear_probe", tiny_model, tr.classnames, None, {"search_steps": 2})
    x = store.eval_features(tr.dataset, tr.positions)  # eval transform: no augmentation, as lpclip
    probe.prepare(x[None], torch.as_tensor(tr.labels))
    tuned = probe.tune(store.eval_features(va.dataset, va.positions), torch.as_tensor(va.labels))
    assert tuned["n_fits"] == 7 + 2 * 2
    clf = LogisticRegression(C=tuned["C"], max_iter=1000).fit(x.double().numpy(), tr.labels)
    test = store.eval_features(task["test"].dataset, task["test"].positions)
    ours = probe.logits({"image_embeds": test})
    ref = torch.as_tensor(clf.decision_function(test.double().numpy()))
    assert torch.allclose(ours.double(), ref, atol=1e-4)
    assert not probe.is_class_agnostic() and not probe.trainable


def test_linear_probe_binary_logits_match_sklearn(tiny_model, task, store):
    from sklearn.linear_model import LogisticRegression

    tr = task["train"]
    keep = tr.labels < 2
    x = store.eval_features(tr.dataset, tr.positions[keep])
    probe = adapt.build_method("linear_probe", tiny_model, tr.classnames[:2], None, {"C": 0.5})
    probe.prepare(x[None], torch.as_tensor(tr.labels[keep]))
    clf = LogisticRegression(C=0.5, max_iter=1000).fit(x.double().numpy(), tr.labels[keep])
    logits = probe.logits({"image_embeds": x})
    assert torch.allclose(logits[:, 1] - logits[:, 0], torch.as_tensor(clf.decision_function(x.double().numpy())).float(),
                          atol=1e-4)
    assert (logits.argmax(1).numpy() == clf.predict(x.double().numpy())).all()


# -- initialisations ---------------------------------------------------------------------------------
def test_coop_csc_draws_an_independent_context_per_class(tiny_model):
    torch.manual_seed(0)
    csc = adapt.build_method("coop_csc", tiny_model, NAMES, None, {"n_ctx": 4})
    ctx = csc.context.ctx.detach()
    assert ctx.shape == (4, 4, tiny_model.text.width)
    assert not any(torch.allclose(ctx[i], ctx[j]) for i in range(4) for j in range(i))
    assert 0.015 < float(ctx.std()) < 0.025  # N(0, 0.02^2)
    phrase = adapt.build_method("coop_csc", tiny_model, NAMES, None, {"ctx_init": "a photo of a"}).context.ctx.detach()
    assert all(torch.equal(phrase[0], phrase[i]) for i in range(4))  # the phrase, copied per class


THREE_LAYERS = {"builder": "openclip", "arch": "tiny-clip-3", "model_cfg": {
    "embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3}}}


def test_maple_deep_couplings_start_as_clones():
    from vlkit import models

    maple = adapt.build_method("maple", models.load(THREE_LAYERS), NAMES, None, {"prompt_depth": 3})
    c = maple.couplings
    assert len(c) == maple.depth == 3
    assert torch.equal(c[1].weight, c[2].weight) and torch.equal(c[1].bias, c[2].bias)
    assert c[1].weight.data_ptr() != c[2].weight.data_ptr()  # clones, not one shared layer
    assert not torch.equal(c[0].weight, c[1].weight)  # layer 0's coupling has its own init


# -- the results say what ran ------------------------------------------------------------------------
def test_results_state_optimiser_selection_and_augmentation(tmp_path):
    out = adapt.run("coop,tip_adapter_f,linear_probe", "digits", "preset:tiny-clip", shots=[1], seeds=[1],
                    budget=0.02, views=2, device="cpu", out=str(tmp_path / "run"), overrides=["n_ctx=2"])
    md = out["paths"]["markdown"].read_text()
    assert "| coop | sgd, lr 0.002, wd 0.0005, momentum 0.9; const_warmup_cosine | last epoch | 2 cached views, " \
           "crops 0.08-1, no flip (the data declares flips unsafe) |" in md
    assert "| tip_adapter_f | adamw, lr 0.001, wd 0.01, betas (0.9, 0.999), eps 0.0001; cosine | " \
           "best validation epoch; alpha, beta searched on validation | 2 cached views, crops 0.5-1" in md
    assert "| linear_probe | - | C searched on validation | none (eval-transform features, as the reference) |" in md
    assert np.isfinite([r["test_acc"] for r in out["records"]]).all()
