"""PRE (arXiv 2309.07760) and ProGrad (arXiv 2205.14865) checked by hand on tiny cases.

PRE: the residual (a zeroed encoder output gives CoOp's prompts exactly), the bidirectional
LSTM recomputed from its gate equations, gradients reaching the encoder and never the towers.
ProGrad: the projection on 2-D vectors, and one SGD step of the real training loop against the
update rebuilt from two hand-taken gradients (the reference's soft cross-entropy for the
distillation term, so the KL the method uses is checked to give the same gradient).
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from vlkit import adapt
from vlkit.adapt.methods.prograd import prograd_project
from vlkit.adapt.splits import load_split, whole
from vlkit.adapt.training import AdaptTask, accuracy, predict
from vlkit.engine import EngineConfig, fit
from vlkit.errors import UserError

from test_adapt_formulas import NAMES, TEMPLATES  # four digit names, two templates
from test_adapt_registry import FixedBatch  # a BatchSource of one fixed batch


def _embeds(model, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.embed_dim, generator=g) * 3.0  # unnormalised, as the cache holds them


def _step_cfg(steps=1, lr=1.0, name="sgd"):
    optim = {"name": name, "lr": lr, "weight_decay": 0.0}
    if name == "sgd":
        optim["momentum"] = 0.0
    return EngineConfig(steps=steps, optim=optim, schedule=None, precision="fp32", device="cpu",
                        progress=False, tensorboard=False, checkpoint_every=0, save_safetensors=False)


# -- PRE -----------------------------------------------------------------------------------------
def _pre_and_coop(model, encoder):
    torch.manual_seed(0)
    pre = adapt.build_method("pre", model, NAMES, TEMPLATES, {"encoder": encoder})
    coop = adapt.build_method("coop", model, NAMES, TEMPLATES, {"ctx_init": "a photo of a"})
    pre.eval(), coop.eval()
    return pre, coop


@pytest.mark.parametrize("encoder", ["lstm", "mlp", "transformer"])
def test_pre_with_zeroed_encoder_output_is_coop(tiny_model, encoder):
    pre, coop = _pre_and_coop(tiny_model, encoder)
    assert torch.equal(pre.context.ctx, coop.context.ctx)  # both start at "a photo of a"
    with torch.no_grad():
        new = torch.randn(pre.context.ctx.shape, generator=torch.Generator().manual_seed(3))
        pre.context.ctx.copy_(new), coop.context.ctx.copy_(new)  # the same ctx, away from the init
        for p in pre.encoder.out.parameters():
            p.zero_()
        assert torch.equal(pre.context_tokens(), coop.context_tokens())  # residual: ctx + 0
        assert torch.equal(pre.text_features(), coop.text_features())
        for p in pre.encoder.out.parameters():
            p.normal_(0, 0.1)
        # a nonzero encoder moves the context and so the text features
        assert (pre.context_tokens() - coop.context_tokens()).abs().max() > 1e-3
        assert (pre.text_features() - coop.text_features()).abs().max() > 1e-4


def _lstm_by_hand(lstm, x):
    """(n, W) -> (n, 2H): the two directions of a one-layer LSTM from the gate equations (i, f, g, o)."""
    def run(sfx, order):
        w_ih, w_hh = getattr(lstm, "weight_ih_l0" + sfx), getattr(lstm, "weight_hh_l0" + sfx)
        b = getattr(lstm, "bias_ih_l0" + sfx) + getattr(lstm, "bias_hh_l0" + sfx)
        h = c = torch.zeros(lstm.hidden_size)
        out = {}
        for t in order:
            i, f, g, o = (w_ih @ x[t] + w_hh @ h + b).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out[t] = h
        return torch.stack([out[t] for t in range(len(x))])

    n = len(x)
    return torch.cat([run("", range(n)), run("_reverse", reversed(range(n)))], dim=-1)


def test_pre_lstm_context_is_ctx_plus_bidirectional_lstm_by_hand(tiny_model):
    pre, _ = _pre_and_coop(tiny_model, "lstm")
    ctx = pre.context.ctx.detach()  # (4, W)
    with torch.no_grad():
        want = ctx + _lstm_by_hand(pre.encoder.out, ctx)
        got = pre.context_tokens()
    assert got.shape == (len(NAMES), 4, tiny_model.text.width)
    torch.testing.assert_close(got[2], want, atol=1e-5, rtol=1e-5)
    assert (want - ctx).abs().max() > 1e-3  # the encoder's term is not negligible


def test_pre_mlp_context_by_hand(tiny_model):
    pre = adapt.build_method("pre", tiny_model, NAMES, TEMPLATES, {"encoder": "mlp", "bottleneck": 8})
    lin1, lin2 = pre.encoder.hidden[0], pre.encoder.out
    assert lin1.out_features == 8
    ctx = pre.context.ctx.detach()
    with torch.no_grad():
        want = ctx + F.relu(ctx @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
        torch.testing.assert_close(pre.context_tokens()[0], want)


@pytest.mark.parametrize("encoder", ["lstm", "mlp", "transformer"])
def test_pre_trains_encoder_and_context_only(tiny_model, tmp_path, encoder):
    frozen = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    torch.manual_seed(0)
    pre = adapt.build_method("pre", tiny_model, NAMES, TEMPLATES, {"encoder": encoder})
    batch = {"image_embeds": _embeds(tiny_model), "labels": torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])}
    pre.train()
    pre(batch)["ce_loss"].backward()
    enc = dict(pre.encoder.named_parameters())
    assert enc and all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.values()), encoder
    assert pre.context.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_model.parameters())
    before = {k: v.clone() for k, v in pre.state_dict().items()}
    pre.zero_grad()
    fit(AdaptTask(pre), FixedBatch(batch), _step_cfg(2, 0.01, "adamw"), tmp_path / "fit")
    changed = {k for k, v in pre.state_dict().items() if not torch.equal(v, before[k])}
    assert "context.ctx" in changed and any(k.startswith("encoder.") for k in changed)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, frozen[k]), f"PRE changed frozen weight {k}"


def test_pre_class_specific_context_encodes_each_class(tiny_model):
    pre = adapt.build_method("pre", tiny_model, NAMES, TEMPLATES, {"ctx_init": "", "n_ctx": 3, "csc": True})
    ctx = pre.context.ctx.detach()  # (n_cls, 3, W)
    with torch.no_grad():
        got = pre.context_tokens()
    torch.testing.assert_close(got[1], ctx[1] + _lstm_by_hand(pre.encoder.out, ctx[1]), atol=1e-5, rtol=1e-5)


def test_pre_refuses_unknown_encoder(tiny_model):
    with pytest.raises(UserError, match="unknown PRE encoder 'gru'.*lstm"):
        adapt.build_method("pre", tiny_model, NAMES, TEMPLATES, {"encoder": "gru"})


# -- ProGrad -------------------------------------------------------------------------------------
def test_prograd_projection_on_2d_vectors():
    g, k = torch.tensor([3.0, 1.0]), torch.tensor([-1.0, 1.0])  # g.k = -2 < 0: conflicting
    out = prograd_project(g, k)
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0]))  # g - (-2 / 2) k
    assert float(out @ k) == pytest.approx(0.0, abs=1e-7)  # orthogonal to g_kl
    torch.testing.assert_close(prograd_project(g, k, 0.5), torch.tensor([2.5, 1.5]))
    agree = torch.tensor([1.0, 1.0])  # g.k = 4 > 0: unchanged
    assert torch.equal(prograd_project(g, agree), g)
    assert torch.equal(prograd_project(g, torch.zeros(2)), g)  # no direction: unchanged


def test_prograd_context_init_is_the_phrase_after_zeros(tiny_model):
    from vlkit.adapt.prompts import phrase_embeddings

    pg = adapt.build_method("prograd", tiny_model, NAMES, TEMPLATES, {"n_ctx": 6})
    phrase = phrase_embeddings(tiny_model, "a photo of a")
    k = len(phrase)
    assert pg.context.ctx.shape[0] == 6 and torch.equal(pg.context.ctx[6 - k:].cpu(), phrase)
    assert not pg.context.ctx[:6 - k].any()
    with pytest.raises(UserError, match="n_ctx"):
        adapt.build_method("prograd", tiny_model, NAMES, TEMPLATES, {"n_ctx": k - 1})


def _hand_update(pg, batch, zs_text, temperature):
    """(g_ce, g_kl, projected g) for the context, with the reference's soft cross-entropy as L_kl."""
    ctx = pg.context.ctx
    img = F.normalize(batch["image_embeds"], dim=-1)
    scale = pg.model.logit_scale.detach().exp()
    logits = scale * img @ pg.text_features().T
    ce = F.cross_entropy(logits, batch["labels"])
    teacher = F.softmax(scale * img @ zs_text.T / temperature, dim=-1)
    soft_ce = -(teacher * F.log_softmax(logits / temperature, dim=-1)).sum(1).mean() * temperature ** 2
    g_ce, = torch.autograd.grad(ce, ctx, retain_graph=True)
    g_kl, = torch.autograd.grad(soft_ce, ctx)
    dot = (g_ce * g_kl).sum()
    g = g_ce - dot / (g_kl * g_kl).sum() * g_kl if dot < 0 else g_ce
    return g_ce, g_kl, g


@pytest.mark.parametrize("conflict", [True, False])
def test_prograd_one_sgd_step_is_the_projected_update(tiny_model, tmp_path, conflict):
    pg = adapt.build_method("prograd", tiny_model, NAMES, TEMPLATES, {"n_ctx": 4, "temperature": 2.0})
    with torch.no_grad():  # a context away from the init, so the prompted and zero-shot predictions differ
        pg.context.ctx.add_(torch.randn(pg.context.ctx.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    zs_text = pg.clip_text.clone()
    pg.train()
    for seed in range(40):  # the first labelling whose two gradients (dis)agree as the case asks
        embeds = _embeds(tiny_model, seed=seed)
        labels = torch.randint(0, len(NAMES), (8,), generator=torch.Generator().manual_seed(seed))
        batch = {"image_embeds": embeds, "labels": labels}
        g_ce, g_kl, g = _hand_update(pg, batch, zs_text, 2.0)
        if (float((g_ce * g_kl).sum()) < 0) == conflict:
            break
    assert (float((g_ce * g_kl).sum()) < 0) == conflict  # the case under test happens
    if conflict:
        assert float((g * g_kl).sum()) == pytest.approx(0.0, abs=1e-6 * float(g.norm() * g_kl.norm()))
        assert (g - g_ce).abs().max() > 1e-3 * g_ce.abs().max()  # the projection changes the update
    before = pg.context.ctx.detach().clone()
    fit(AdaptTask(pg), FixedBatch(batch), _step_cfg(1, 1.0), tmp_path / "fit")  # SGD lr 1: ctx -= g
    torch.testing.assert_close(pg.context.ctx.detach(), before - g, atol=1e-6, rtol=1e-5)


def test_prograd_loss_value_is_the_cross_entropy(tiny_model):
    pg = adapt.build_method("prograd", tiny_model, NAMES, TEMPLATES, {"n_ctx": 4})
    batch = {"image_embeds": _embeds(tiny_model), "labels": torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])}
    pg.train()
    out = pg(batch)
    ce = F.cross_entropy(out["logits"], batch["labels"])
    torch.testing.assert_close(out["loss"].detach(), ce.detach())
    t = 1.0
    zs = pg.logit_scale * F.normalize(batch["image_embeds"], dim=-1) @ pg.clip_text.T
    p, logq = F.softmax(zs / t, -1), F.log_softmax(out["logits"].detach() / t, -1)
    torch.testing.assert_close(out["kl"], (p * (p.log() - logq)).sum(1).mean())


# -- both learn ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pre", "prograd"])
def test_learns_on_a_few_shot_task(name, tiny_model, task, store, tmp_path):
    split = task["train"]
    views = store.view_features(split.dataset, split.positions, 2)
    batch = {"image_embeds": views[0], "labels": torch.as_tensor(split.labels, dtype=torch.long)}
    torch.manual_seed(0)
    method = adapt.build_method(name, tiny_model, split.classnames, split.templates)

    def ce():
        method.eval()
        with torch.no_grad():
            return float(F.cross_entropy(method.logits(batch), batch["labels"]))

    start = ce()
    fit(AdaptTask(method), FixedBatch(batch), _step_cfg(15, 0.01, "adamw"), tmp_path / "fit")
    assert ce() < start - 0.01, f"{name}: training cross-entropy {start:.4f} -> {ce():.4f}"


def test_api_and_cli_run_pre_and_prograd(tiny_model, store, tmp_path, capsys):
    out = adapt.run("zeroshot,pre,prograd", "digits", tiny_model, shots=[2], seeds=[1], views=1,
                    overrides=["epochs=3", "pre.encoder=mlp", "prograd.n_ctx=4"], out=str(tmp_path / "api"),
                    store=store)
    table = json.loads(out["paths"]["json"].read_text())
    assert [r["method"] for r in table["rows"]] == ["zeroshot", "pre", "prograd"]
    test = whole(load_split("digits", "test"))
    for name in ("pre", "prograd"):
        rec, = [r for r in table["records"] if r["method"] == name]
        assert rec["steps"] == 3 and rec["final_loss"] is not None
        loaded = adapt.load_method(tmp_path / "api" / name / "2shot" / "seed1" / "adapter", tiny_model)
        assert (loaded.config.encoder == "mlp") if name == "pre" else (loaded.config.n_ctx == 4)
        # the saved adapter reproduces the recorded test accuracy
        assert accuracy(predict(loaded, test, store), torch.as_tensor(test.labels)) == pytest.approx(rec["test_acc"])

    from vlkit.adapt.cli import add_cli

    parser = argparse.ArgumentParser(prog="vlkit")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["adapt", "--list"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    assert "pre:" in listing and "encoder = 'lstm'" in listing and "prograd_lambda = 1.0" in listing
    args = parser.parse_args(["adapt", "--method", "pre,prograd", "--data", "digits", "--model", "preset:tiny-clip",
                              "--shots", "1", "--seeds", "1", "--out", str(tmp_path / "cli"), "views=1", "epochs=1"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| pre |" in printed and "| prograd |" in printed
    assert (tmp_path / "cli" / "prograd" / "1shot" / "seed1" / "adapter" / "adapter.safetensors").is_file()
