"""One test over the whole method registry: every method learns, keeps the model frozen, and
round-trips its adapter state bit-exactly (timm-style: a new method is tested once registered)."""

from __future__ import annotations

import pytest
import torch

from vlkit import adapt
from vlkit.adapt.training import AdaptTask, predict
from vlkit.engine import EngineConfig, fit
from vlkit.engine.loop import loss_terms


class FixedBatch:
    """A BatchSource that yields the same batch: the loss must fall on it.

    The tiny model is random, so its features barely tell digits apart and a balanced batch
    sits near its loss floor (ln 10) from the start; labelling the batch with one class gives
    every method a clear way down while still checking that gradients reach its parameters.
    """

    batch_size = 20

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 1

    def batches(self, epoch, start=0):
        return iter([self.batch] if start == 0 else [])


def _batch(method, task, store):
    from vlkit.data.collate import Collate
    from vlkit.adapt.training import LabelledImages

    split = task["train"]
    batch = {"labels": torch.full((len(split),), 3, dtype=torch.long)}
    if method.uses_image_tower():
        data = LabelledImages(split)
        batch["images"] = Collate(store.eval_transform(), "first")([data[i] for i in range(len(data))])["images"]
    else:
        batch["image_embeds"] = store.view_features(split.dataset, split.positions, 2)[0]
    return batch


def _loss(method, batch) -> float:
    method.eval()
    with torch.no_grad():
        return float(loss_terms(method(batch))[0])


@pytest.mark.parametrize("name", adapt.method_names())
def test_every_method(name, tiny_model, task, store, tmp_path):
    frozen = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    torch.manual_seed(0)
    method = adapt.build_method(name, tiny_model, task["train"].classnames, task["train"].templates)
    split = task["train"]
    method.prepare(store.view_features(split.dataset, split.positions, 2), torch.as_tensor(split.labels))
    batch = _batch(method, task, store)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    if method.trainable:
        assert trainable, f"{name} trains but has no trainable parameters"
        start = _loss(method, batch)
        cfg = EngineConfig(steps=6, optim={"name": "adamw", "lr": 0.01, "weight_decay": 0.0}, schedule=None,
                           precision="fp32", device="cpu", progress=False, tensorboard=False,
                           checkpoint_every=0, save_safetensors=False)
        fit(AdaptTask(method), FixedBatch(batch), cfg, tmp_path / "fit")
        assert _loss(method, batch) < start, f"{name}: the loss did not fall"
        after = method.state_dict()
        changed = {k for k in after if not torch.equal(after[k], before[k])}
        assert changed and changed <= trainable, f"{name}: changed {changed - trainable} besides trainable params"
    else:
        assert not trainable
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, frozen[k]), f"{name} changed frozen weight {k}"

    method.save(tmp_path / "adapter")
    loaded = adapt.load_method(tmp_path / "adapter", tiny_model)
    assert loaded.state_dict().keys() == method.state_dict().keys()
    for k, v in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), f"{name}: {k} did not round-trip"
    method.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.logits(batch), method.logits(batch))

    logits = predict(loaded, task["test"], store)
    assert logits.shape == (len(task["test"]), 10) and torch.isfinite(logits).all()
