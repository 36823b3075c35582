"""PromptSRC (arXiv 2307.06948) checked by hand on tiny cases.

The total loss from fixed features and logits (CE + 25 L1_text + 10 L1_image + KL, the KL
written out as sum p_zs (log p_zs - log p) / numel); the Gaussian prompt-aggregation weights
from the density; the aggregate after a real 3-epoch fit equals the weighted average of the
prompts recorded at each epoch end; only the prompts train; it learns; API and CLI run it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from vlkit import adapt
from vlkit.adapt.methods.promptsrc import gpa_weights, src_losses
from vlkit.adapt.splits import load_split, whole
from vlkit.adapt.training import AdaptTask, LabelledImages, accuracy, predict
from vlkit.engine import EngineConfig, Hook, fit
from vlkit.engine.loop import loss_terms
from vlkit.errors import UserError

from test_adapt_formulas import NAMES, TEMPLATES  # four digit names, two templates
from test_adapt_registry import FixedBatch  # a BatchSource of one fixed batch


def _cfg(epochs=None, steps=None, lr=0.05):
    return EngineConfig(epochs=epochs or 1, steps=steps, optim={"name": "sgd", "lr": lr, "weight_decay": 0.0,
                                                                "momentum": 0.0},
                        schedule=None, precision="fp32", device="cpu", progress=False, tensorboard=False,
                        checkpoint_every=0, save_safetensors=False)


def _images(task, store):
    from vlkit.data.collate import Collate

    data = LabelledImages(task["train"])
    batch = Collate(store.eval_transform(), "first")([data[i] for i in range(len(data))])
    return {"images": batch["images"], "labels": torch.as_tensor(task["train"].labels, dtype=torch.long)}


# -- the loss -------------------------------------------------------------------------------------
def test_total_loss_by_hand(tiny_model):
    method = adapt.build_method("promptsrc", tiny_model, NAMES[:2], TEMPLATES)
    text = torch.tensor([[0.6, 0.8], [1.0, 0.0]])  # (n_cls, D)
    zs_text = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    image = torch.tensor([[0.0, 1.0]])  # (B, D)
    zs_image = torch.tensor([[0.6, 0.8]])
    method.text_features = lambda: text  # fixed features, so the wiring of the weights is what is tested
    method.image_features = lambda batch: image
    method.frozen_image_features = lambda batch: zs_image
    method.zs_text = zs_text
    scale = float(method.logit_scale)
    out = method({"images": None, "labels": torch.tensor([1])})

    logits = [scale * 0.8, scale * 0.0]  # image . text rows
    zs_logits = [scale * (0.6 * 0.8 + 0.8 * 0.6), scale * 0.8]
    log_p = [v - math.log(sum(math.exp(u) for u in logits)) for v in logits]
    log_q = [v - math.log(sum(math.exp(u) for u in zs_logits)) for v in zs_logits]
    ce = -log_p[1]
    l1_text = (0.2 + 0.2 + 1.0 + 1.0) / 4
    l1_image = (0.6 + 0.2) / 2
    kl = sum(math.exp(q) * (q - p) for p, q in zip(log_p, log_q)) / 2  # KL(zero-shot || prompted) / numel
    assert float(out["ce_loss"]) == pytest.approx(ce, rel=1e-5)
    assert float(out["text_l1_loss"]) == pytest.approx(25 * l1_text, rel=1e-6)
    assert float(out["image_l1_loss"]) == pytest.approx(10 * l1_image, rel=1e-6)
    assert float(out["kl_loss"]) == pytest.approx(kl, rel=1e-5, abs=1e-7)
    assert float(loss_terms(out)[0]) == pytest.approx(ce + 25 * l1_text + 10 * l1_image + kl, rel=1e-5)


def test_kl_temperature_by_hand():
    logits, zs = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    t = 2.0
    p = [v / t for v in (2.0, 0.0, -1.0)]
    q = [v / t for v in (0.0, 1.0, 0.0)]
    log_p = [v - math.log(sum(math.exp(u) for u in p)) for v in p]
    log_q = [v - math.log(sum(math.exp(u) for u in q)) for v in q]
    kl = t * t * sum(math.exp(b) * (b - a) for a, b in zip(log_p, log_q)) / 3
    zero = torch.zeros(1, 2)
    assert float(src_losses(logits, zs, zero, zero, zero, zero, t)["kl"]) == pytest.approx(kl, rel=1e-6)


# -- Gaussian prompt aggregation -------------------------------------------------------------------
def test_gpa_weights_are_the_normalised_gaussian_density():
    dens = [math.exp(-0.5 * ((e - 2.5) / 0.8) ** 2) / (0.8 * math.sqrt(2 * math.pi)) for e in (1, 2, 3, 4)]
    assert gpa_weights(4, 2.5, 0.8).tolist() == pytest.approx([d / sum(dens) for d in dens], rel=1e-12)
    far = gpa_weights(3, 40.0, 1.0)  # every density underflows in float64; the weights do not
    assert far.tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    with pytest.raises(UserError, match="gpa_std > 0"):
        gpa_weights(3, 1.0, 0.0)


def test_gpa_schedule_is_the_papers_scaled_to_the_run(tiny_model):
    method = adapt.build_method("promptsrc", tiny_model, NAMES, TEMPLATES)
    assert torch.equal(method.gpa_schedule(20), gpa_weights(20, 15.0, 1.0))
    assert torch.equal(method.gpa_schedule(4), gpa_weights(4, 3.0, 0.2))  # 15 * 4/20, 1 * 4/20


class Record(Hook):
    """The prompts after each epoch (the task's GPA hook has already seen them)."""

    def __init__(self, method):
        self.method, self.seen = method, []

    def on_epoch_end(self, state):
        self.seen.append({k: p.detach().clone() for k, p in self.method.named_parameters()})


def test_fit_ends_with_the_gaussian_average_of_the_epochs_prompts(tiny_model, task, store, tmp_path):
    torch.manual_seed(0)
    method = adapt.build_method("promptsrc", tiny_model, task["train"].classnames, task["train"].templates,
                                {"gpa_mean": 10.0, "gpa_std": 8.0})  # over 3 epochs: mean 1.5, std 1.2
    record = Record(method)
    fit(AdaptTask(method), FixedBatch(_images(task, store)), _cfg(epochs=3), tmp_path / "fit", hooks=[record])
    assert len(record.seen) == 3
    dens = [math.exp(-0.5 * ((e - 1.5) / 1.2) ** 2) for e in (1, 2, 3)]
    w = [d / sum(dens) for d in dens]
    for k, p in method.named_parameters():
        per_epoch = [s[k].double() for s in record.seen]
        assert (per_epoch[2] - per_epoch[0]).abs().max() > 1e-4  # the prompts moved: the average means something
        expected = sum(wi * v for wi, v in zip(w, per_epoch))
        assert torch.allclose(p.detach().double(), expected, atol=1e-6), k


# -- structure -------------------------------------------------------------------------------------
def test_only_prompts_train_and_the_towers_stay_frozen(tiny_model, task, store, tmp_path):
    frozen = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    torch.manual_seed(0)
    method = adapt.build_method("promptsrc", tiny_model, task["train"].classnames, task["train"].templates)
    names = sorted(k for k, p in method.named_parameters() if p.requires_grad)
    assert names == ["ctx", "deep_text.0", "vision.0", "vision.1"]  # tiny towers: 2 layers, depth capped to 2
    assert sorted(method.state_dict()) == names  # no frozen tensor in the adapter
    assert not any(p.requires_grad for p in tiny_model.parameters())
    batch = _images(task, store)
    loss = loss_terms(method(batch))[0]
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    fit(AdaptTask(method), FixedBatch(batch), _cfg(steps=2), tmp_path / "fit")
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_depth_is_capped_per_tower_and_n_ctx_checked(tiny_model):
    method = adapt.build_method("promptsrc", tiny_model, NAMES, None,
                                {"prompt_depth_text": 1, "prompt_depth_vision": 5, "n_ctx_vision": 3})
    assert (method.depth_text, method.depth_vision) == (1, 2) and len(method.deep_text) == 0
    assert [tuple(p.shape) for p in method.vision] == [(3, tiny_model.visual.width)] * 2
    with pytest.raises(UserError, match="n_ctx_text >= 1"):
        adapt.build_method("promptsrc", tiny_model, NAMES, None, {"n_ctx_vision": 0})


def test_text_context_starts_from_the_phrase_unless_longer_than_it(tiny_model):
    from vlkit.adapt.prompts import phrase_embeddings

    phrase = phrase_embeddings(tiny_model, "a photo of a")  # (4, W)
    two = adapt.build_method("promptsrc", tiny_model, NAMES, None, {"n_ctx_text": 2})
    assert torch.equal(two.ctx.detach().cpu(), phrase[:2]) and two.prompts.name_start - two.prompts.start == 4
    torch.manual_seed(0)
    six = adapt.build_method("promptsrc", tiny_model, NAMES, None, {"n_ctx_text": 6})
    assert six.ctx.shape == (6, tiny_model.text.width) and float(six.ctx.detach().std()) < 0.05  # random, std 0.02
    assert six.prompts.name_start - six.prompts.start == 6  # six placeholders, no phrase


def test_a_vision_tower_without_tokens_is_refused(cnn_model):
    with pytest.raises(UserError, match="needs token access to the vision tower") as e:
        adapt.build_method("promptsrc", cnn_model, NAMES, None)
    assert "\n" not in str(e.value) and "use a model" in str(e.value)


# -- it learns; API and CLI -----------------------------------------------------------------------
def test_learns_on_a_few_shot_task(tiny_model, task, store, tmp_path):
    batch = _images(task, store)
    torch.manual_seed(0)
    method = adapt.build_method("promptsrc", tiny_model, task["train"].classnames, task["train"].templates)

    def loss():
        method.eval()
        with torch.no_grad():
            return float(loss_terms(method(batch))[0])

    start = loss()
    fit(AdaptTask(method), FixedBatch(batch), _cfg(steps=15, lr=0.01), tmp_path / "fit")
    assert loss() < start - 0.01


def test_api_and_cli_run_promptsrc(tiny_model, store, tmp_path, capsys):
    out = adapt.run("zeroshot,promptsrc", "digits", tiny_model, shots=[2], seeds=[1], views=1,
                    overrides=["epochs=2", "promptsrc.n_ctx_vision=2"], out=str(tmp_path / "api"), store=store)
    table = json.loads(out["paths"]["json"].read_text())
    rec, = [r for r in table["records"] if r["method"] == "promptsrc"]
    assert rec["steps"] == 2 * (20 // 4) and rec["final_loss"] is not None  # 20 images, batch 4
    loaded = adapt.load_method(tmp_path / "api" / "promptsrc" / "2shot" / "seed1" / "adapter", tiny_model)
    assert loaded.config.n_ctx_vision == 2
    test = whole(load_split("digits", "test"))
    # the saved (aggregated) prompts reproduce the recorded test accuracy
    assert accuracy(predict(loaded, test, store), torch.as_tensor(test.labels)) == pytest.approx(rec["test_acc"])

    from vlkit.cli import main

    assert main(["adapt", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "promptsrc:" in listing and "text_loss_weight = 25.0" in listing and "gpa_mean = 15.0" in listing
    cell = tmp_path / "cli" / "promptsrc" / "1shot" / "seed1" / "adapter"
    assert main(["adapt", "--method", "promptsrc", "--data", "digits", "--model", "preset:tiny-clip", "--shots", "1",
                 "--seeds", "1", "--out", str(tmp_path / "cli"), "views=1", "epochs=1"]) == 0
    assert "| promptsrc |" in capsys.readouterr().out and (cell / "adapter.safetensors").is_file()
