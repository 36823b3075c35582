"""The adapted model stays frozen, over the whole method registry.

A method must never train its DualEncoder: every model parameter has ``requires_grad`` False and
collects no gradient through a training step, the towers stay in eval mode (no dropout, fixed
norm statistics: the cached features stay valid), and the optimizer the engine builds from
``method.trainable_parameters()`` holds none of the model's tensors. The registry test's
"weights unchanged" check cannot see a model that is merely unfrozen: the model is not a
submodule of the method, so the optimizer never steps it, yet its gradients accumulate (memory,
time) and its towers run in train mode.

Each test loads its own model (not the shared session fixture, which other tests have already
frozen) and puts it in train mode first, as a model fresh from pretraining would be.
"""

from __future__ import annotations

import pytest
import torch

from vlkit import adapt, models
from vlkit.engine.task import loss_terms

NAMES = ["zero", "one", "two", "three"]


def _fresh_model():
    model = models.load("preset:tiny-clip")
    model.unfreeze("all").train()  # as a model handed over straight from training would be
    assert all(p.requires_grad for p in model.parameters()) and model.text.training
    return model


def _batch(method, model, n=6):
    g = torch.Generator().manual_seed(0)
    batch = {"labels": torch.arange(n) % len(NAMES)}
    if method.uses_image_tower():
        batch["images"] = torch.randn(n, 3, model.image_size, model.image_size, generator=g)
    else:
        batch["image_embeds"] = torch.randn(n, model.embed_dim, generator=g)
    return batch


def _assert_frozen(name, model, method):
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not trainable, f"{name}: {len(trainable)} model tensors trainable, e.g. {trainable[:3]}"
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert not with_grad, f"{name}: gradients reached model tensors {with_grad[:3]}"
    in_train = [n for n, m in model.named_modules()
                if n and m.training and (any(True for _ in m.parameters()) or any(True for _ in m.buffers()))]
    assert not in_train, f"{name}: {in_train[:3]} in train mode"  # (a parameter-free Identity head may be)
    model_ids = {id(p) for p in model.parameters()}
    leaked = [i for i, p in enumerate(method.trainable_parameters()) if id(p) in model_ids]
    assert not leaked, f"{name}: trainable_parameters() holds model tensors"


@pytest.mark.parametrize("name", adapt.method_names())
def test_training_step_leaves_the_model_frozen(name):
    model = _fresh_model()
    torch.manual_seed(0)
    method = adapt.build_method(name, model, NAMES, ["a photo of a {}.", "a drawing of a {}."])
    _assert_frozen(name, model, method)  # right after building

    batch = _batch(method, model)
    if not method.uses_image_tower():  # what training.train does before the first step
        views = torch.randn(2, 8, model.embed_dim, generator=torch.Generator().manual_seed(1))
        method.prepare(views, torch.arange(8) % len(NAMES))
    method.train()
    model.train()  # anything that flips the model to train mode must leave frozen parts in eval
    loss, _ = loss_terms(method(batch))  # the engine's loss: the sum of the *_loss keys
    if method.trainable:
        loss.backward()
        got = [p for p in method.trainable_parameters() if p.grad is not None]
        assert got, f"{name}: the step reached none of its own parameters"
    else:
        assert not loss.requires_grad, f"{name} is training-free but its loss has a gradient path"
    _assert_frozen(name, model, method)


def test_frozen_check_sees_an_unfrozen_model():
    """The check above has teeth: the same model, unfrozen after the method is built, fails it."""
    model = _fresh_model()
    method = adapt.build_method("coop", model, NAMES, None, {"n_ctx": 2})
    model.unfreeze("text")
    loss, _ = loss_terms(method(_batch(method, model)))
    loss.backward()
    with pytest.raises(AssertionError, match="model tensors trainable"):
        _assert_frozen("coop", model, method)
    assert any(p.grad is not None for p in model.text.parameters())
