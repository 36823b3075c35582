"""Mechanisms a user relies on: exact prompt assembly, CoCoOp's batched pass, LoRA's merge,
Tip-Adapter's cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlkit import adapt
from vlkit.adapt.lora_layers import LoRAFactors, LoRALinear, LoRAMultiheadAttention, fold
from vlkit.adapt.prompts import phrase_embeddings

NAMES = ["zero", "one", "two", "three"]


def _images(task, store, n=8):
    from vlkit.adapt.training import LabelledImages
    from vlkit.data.collate import Collate

    data = LabelledImages(task["train"])
    return Collate(store.eval_transform(), "first")([data[i] for i in range(n)])["images"]


@pytest.mark.parametrize("position,text", [("end", "X X X X {}."), ("middle", "X X {} X X."),
                                           ("front", "{} X X X X.")])
def test_learned_prompt_equals_the_plain_text_path(tiny_model, position, text):
    """With the context set to the placeholder's own embeddings, the prompted features are the
    tower's features of the written prompt (insides path, truncation and placement exact)."""
    coop = adapt.build_method("coop", tiny_model, NAMES, None, {"n_ctx": 4, "class_token_position": position})
    with torch.no_grad():
        coop.context.ctx.copy_(phrase_embeddings(tiny_model, "X X X X"))
        expected = tiny_model.encode_text([text.format(n) for n in NAMES])
        assert torch.allclose(coop.text_features(), expected, atol=1e-5)


def test_phrase_init_starts_at_the_hand_written_prompt(tiny_model):
    kg = adapt.build_method("kgcoop", tiny_model, NAMES, None)  # ctx_init "a photo of a"
    with torch.no_grad():
        expected = tiny_model.encode_text([f"a photo of a {n}." for n in NAMES])
        assert torch.allclose(kg.text_features(), expected, atol=1e-5)


def test_cocoop_batched_equals_per_image_loop(tiny_model, task, store):
    torch.manual_seed(0)
    cocoop = adapt.build_method("cocoop", tiny_model, task["train"].classnames, None, {"chunk": 7})
    with torch.no_grad():
        for p in cocoop.meta_net.parameters():
            p.normal_(std=0.5)  # a visible per-image shift
        feats = store.view_features(task["train"].dataset, task["train"].positions[:5], 1)[0]
        batched = cocoop.logits({"image_embeds": feats})
        looped = cocoop.logits_per_image({"image_embeds": feats})
    assert batched.shape == (5, 10)
    assert torch.allclose(batched, looped, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # prompts really depend on the image


def test_lora_is_exact_at_init_and_merges_to_the_same_logits(tiny_model, task, store):
    images = _images(task, store)
    lora = adapt.build_method("lora", tiny_model, task["train"].classnames, task["train"].templates)
    lora.eval()
    tokens = {"input_ids": lora.input_ids, "attention_mask": lora.attention_mask}
    with torch.no_grad():
        plain = tiny_model.logit_scale.exp() * tiny_model.encode_image(images) @ tiny_model.encode_text(tokens).T
        assert torch.allclose(lora.logits({"images": images}), plain, atol=1e-5)  # B = 0: the frozen model
        for name, p in lora.named_parameters():
            if ".B." in name:
                p.normal_(std=0.2)
        adapted = lora.logits({"images": images})
        merged = lora.merge()
        assert torch.allclose(lora.merged_logits(merged, {"images": images}), adapted, atol=1e-4)
        assert not torch.allclose(adapted, plain, atol=1e-3)
    assert not any(isinstance(m, (LoRALinear, LoRAMultiheadAttention)) for m in merged.modules())
    assert not any(isinstance(m, (LoRALinear, LoRAMultiheadAttention)) for m in tiny_model.modules())


def test_fused_qkv_lora_equals_separate_updates():
    torch.manual_seed(0)
    base = nn.Linear(6, 18)
    factors = LoRAFactors(6, 18, [(0, 6), (12, 6)], rank=2, scaling=0.5, dropout=0.0)  # q and v blocks
    for b in factors.B:
        nn.init.normal_(b)
    x = torch.randn(3, 6)
    out = LoRALinear(base, factors)(x)
    q = x @ factors.A[0].T @ factors.B[0].T * 0.5
    v = x @ factors.A[1].T @ factors.B[1].T * 0.5
    assert torch.allclose(out, base(x) + torch.cat([q, torch.zeros(3, 6), v], dim=1), atol=1e-6)
    holder = nn.Sequential(base)
    from vlkit.adapt.lora_layers import Target

    fold(holder, [Target("0", holder, "0", base, None, factors)])
    assert torch.allclose(holder(x), out, atol=1e-5)


def test_tip_adapter_cache_and_validation_search(tiny_model, task, store):
    train_split, val = task["train"], task["val"]
    views = store.view_features(train_split.dataset, train_split.positions, 2)
    tip = adapt.build_method("tip_adapter", tiny_model, train_split.classnames, None, {"search_step": [10, 5]})
    tip.prepare(views, torch.as_tensor(train_split.labels))
    keys = F.normalize(views.mean(0), dim=-1)  # the reference averages raw features, then normalises
    assert torch.allclose(tip.cache_keys, keys) and tip.cache_values.sum(1).eq(1).all()
    chosen = tip.tune(store.eval_features(val.dataset, val.positions), torch.as_tensor(val.labels))
    assert float(tip.alpha) == pytest.approx(chosen["alpha"]) and float(tip.beta) == pytest.approx(chosen["beta"])
    from vlkit.adapt.training import accuracy, predict

    assert accuracy(predict(tip, val, store), torch.as_tensor(val.labels)) == pytest.approx(chosen["val_acc"])


def test_the_epoch_best_on_validation_is_restored(tiny_model, task, store, tmp_path):
    from vlkit.adapt.training import AdaptTask, BestOnValidation, FeatureBatches
    from vlkit.engine import EngineConfig, Hook, fit

    split = task["train"]
    coop = adapt.build_method("coop", tiny_model, split.classnames, None, {"n_ctx": 2})
    views = store.view_features(split.dataset, split.positions, 2)
    snapshots = []

    class Snapshot(Hook):
        def on_epoch_end(self, state):
            snapshots.append(coop.context.ctx.detach().clone())

    scores = iter([0.1, 0.9, 0.2])
    best = BestOnValidation(coop, lambda: next(scores), every=1)
    cfg = EngineConfig(epochs=3, optim={"name": "sgd", "lr": 0.5}, schedule=None, precision="fp32", device="cpu",
                       progress=False, tensorboard=False, checkpoint_every=0, save_safetensors=False)
    fit(AdaptTask(coop), FeatureBatches(views, torch.as_tensor(split.labels), 10, 0), cfg, tmp_path,
        hooks=[Snapshot(), best])
    assert best.best_epoch == 2 and [e for e, _ in best.history] == [1, 2, 3]
    assert torch.equal(coop.context.ctx, snapshots[1]) and not torch.equal(snapshots[1], snapshots[2])


def test_maple_reads_widths_from_the_model(task):
    """Text width 48, vision width 32: the couplings follow the towers (the reference assumes 512/768)."""
    from vlkit import models

    model = models.load({
        "builder": "composed", "image_size": 32, "embed_dim": 24,
        "vision": {"type": "openclip_vit", "cfg": {"width": 32, "layers": 3, "head_width": 16, "patch_size": 8}},
        "text": {"type": "openclip_text", "cfg": {"context_length": 32, "vocab_size": 49408, "width": 48,
                                                  "heads": 2, "layers": 2}}})
    maple = adapt.build_method("maple", model, NAMES, None)
    assert maple.depth == 2 and [tuple(c.weight.shape) for c in maple.couplings] == [(32, 48), (32, 48)]
    images = torch.randn(3, 3, 32, 32)
    out = maple({"images": images, "labels": torch.tensor([0, 1, 2])})
    out["ce_loss"].backward()
    assert out["logits"].shape == (3, 4) and maple.couplings[1].weight.grad.abs().sum() > 0
