"""BiomedCoOp: robust z-score pruning and the total loss by hand, descriptions from a file, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlkit import adapt
from vlkit.adapt.methods.biomedcoop import robust_keep
from vlkit.adapt.training import train
from vlkit.errors import UserError


@pytest.mark.parametrize("scores, tau, kept", [
    # median 1.0, |dev| = [0, .1, .1, 0, 4], MAD 0.1: z = [0, 1, 1, 0, 40]
    ([1.0, 1.1, 0.9, 1.0, 5.0], 1.5, [0, 1, 2, 3]),
    # lower median 1, |dev| = [1, 0, 1, 9], MAD (lower median) 1: z = [1, 0, 1, 9]
    ([0.0, 1.0, 2.0, 10.0], 1.5, [0, 1, 2]),
    ([0.0, 1.0, 2.0, 10.0], 0.5, [1]),
    # MAD 0: only the slots at the median stay
    ([2.0, 2.0, 2.0, 3.0], 1.5, [0, 1, 2]),
])
def test_robust_z_score_pruning_by_hand(scores, tau, kept):
    keep = robust_keep(torch.tensor(scores), tau)
    assert torch.nonzero(keep).flatten().tolist() == kept


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def _log_softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def _normalise(v: list[float]) -> list[float]:
    n = math.hypot(*v)
    return [x / n for x in v]


def test_total_loss_by_hand(tiny_model):
    """Two classes, 2-d features, three description slots; slot 2 scores low and is pruned."""
    method = adapt.build_method("biomedcoop", tiny_model, ["zero", "one"], None, {})
    scale = float(method.logit_scale)
    # per class c, slot i: the feature at angle desc_deg[c][i]; the image at 0 degrees
    desc_deg = [[20.0, 30.0, 120.0], [40.0, 25.0, 150.0]]
    desc = torch.tensor([[_unit(a) for a in row] for row in desc_deg])  # (C=2, P=3, D=2)
    image = torch.tensor([_unit(0.0)])  # (B=1, D)
    text_deg = [70.0, 20.0]  # the student leans to class 1, the teacher to class 0
    text = torch.tensor([_unit(a) for a in text_deg], requires_grad=True)  # (C, D)
    logits = scale * image @ text.T  # (1, 2)
    object.__setattr__(method, "_desc", desc)
    method.logits_and_text = lambda batch: (logits, text)
    method.image_features = lambda batch: image
    out = method({"labels": torch.tensor([1]), "image_embeds": image})

    # by hand: scores per slot max_c scale*cos = scale*[cos20, cos25, cos120] = scale*[.940, .906, -.5];
    # median scale*cos25, MAD scale*(cos20-cos25): z = [1, 0, 41] -> slots 0 and 1 kept
    student = _log_softmax([scale * math.cos(math.radians(a)) for a in text_deg])
    ce = -student[1]
    sccm = 0.0
    for c in range(2):
        mean = _normalise([sum(_unit(a)[k] for a in desc_deg[c]) / 3 for k in range(2)])
        sccm += sum((_unit(text_deg[c])[k] - mean[k]) ** 2 for k in range(2))
    sccm /= 4  # mean over C * D
    teacher_dirs = [_normalise([(_unit(desc_deg[c][0])[k] + _unit(desc_deg[c][1])[k]) / 2 for k in range(2)])
                    for c in range(2)]  # 25 and 32.5 degrees
    teacher = _log_softmax([scale * d[0] for d in teacher_dirs])
    kdsp = sum(math.exp(t) * (t - s) for t, s in zip(teacher, student)) / 2  # / (B * C)

    assert float(out["ce_loss"].detach()) == pytest.approx(ce, rel=1e-4)
    assert float(out["sccm_loss"].detach()) == pytest.approx(0.5 * sccm, rel=1e-4)
    assert float(out["kdsp_loss"].detach()) == pytest.approx(0.25 * kdsp, rel=1e-4)
    total = sum(v for k, v in out.items() if k.endswith("_loss"))
    assert float(total.detach()) == pytest.approx(ce + 0.5 * sccm + 0.25 * kdsp, rel=1e-4)
    total.backward()
    assert text.grad is not None and text.grad.abs().sum() > 0


def test_reference_defaults():
    cfg = adapt.build_config("biomedcoop", {})
    assert (cfg.n_ctx, cfg.ctx_init, cfg.lr, cfg.batch_size, cfg.flip) == (4, "a photo of a", 2.5e-3, 4, False)
    assert (cfg.sccm_weight, cfg.kdsp_weight, cfg.tau, cfg.n_prompts, cfg.selection) == (0.5, 0.25, 1.5, 50, "last")
    assert adapt.get_method("biomedcoop").paper_schedule(16) == {"epochs": 100}


def test_descriptions_from_a_users_file(tiny_model, tmp_path):
    path = tmp_path / "desc.yaml"
    path.write_text("cat: [a feline, a small pet]\ndog: [a loyal pet]\n")
    method = adapt.build_method("biomedcoop", tiny_model, ["cat", "dog"], None, {"descriptions": str(path)})
    feats = method.description_features()  # (C, P, D): P = the longest list; dog's cycles
    with torch.no_grad():
        want = F.normalize(tiny_model.encode_text(["a feline", "a small pet", "a loyal pet", "a loyal pet"]), dim=-1)
    assert torch.allclose(feats.reshape(4, -1), want.float(), atol=1e-6)
    path.write_text("cat: [a feline]\n")
    other = adapt.build_method("biomedcoop", tiny_model, ["cat", "dog"], None, {"descriptions": str(path)})
    with pytest.raises(UserError, match="'dog'"):
        other.prepare(torch.zeros(1, 2, 4), torch.tensor([0, 1]))  # fails before the first step


def _train_loss(method, split, store) -> float:
    feats = store.eval_features(split.dataset, split.positions)
    method.eval()
    with torch.no_grad():
        out = method({"image_embeds": feats, "labels": torch.as_tensor(split.labels)})
    return float(sum(v for k, v in out.items() if k.endswith("_loss")))


def test_learns_on_a_tiny_fewshot_task(tiny_model, task, store, run_settings, tmp_path):
    torch.manual_seed(0)
    split = task["train"]
    method = adapt.build_method("biomedcoop", tiny_model, split.classnames, split.templates,
                                {"epochs": 20, "lr": 0.05, "batch_size": 10})
    method.prepare(None, None)
    start = _train_loss(method, split, store)
    info = train(method, split, None, store, run_settings, 2, 1, tmp_path / "run")
    assert info["steps"] == 20 * 2
    assert _train_loss(method, split, store) < start - 0.05


def test_cli_runs_biomedcoop(tmp_path, capsys):
    from vlkit.cli import main

    assert main(["adapt", "--method", "biomedcoop", "--data", "digits", "--model", "preset:tiny-clip",
                 "--shots", "1", "--seeds", "1", "--out", str(tmp_path), "views=1", "epochs=2"]) == 0
    assert "| biomedcoop |" in capsys.readouterr().out
    assert (tmp_path / "biomedcoop" / "1shot" / "seed1" / "adapter" / "adapter.safetensors").is_file()
