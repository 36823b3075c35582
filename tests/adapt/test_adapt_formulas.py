"""Each method's formula recomputed by hand from its parameters and the frozen model's public API.

The registry test proves that every method learns; it cannot tell a right formula from a wrong
one that also learns (a flipped regulariser sign, a swapped residual ratio, a meta-net whose
shift never reaches the prompt). Here the logits and losses are rebuilt independently:
hand-crafted text weights from ``model.encode_text``, prompts from ``model.tokenize`` and
``model.text.embed_tokens``, the text tower run through ``forward_embeddings`` and
``project_text``, and the method's own weights read out of its modules. Each test also checks
that the quantity under test is far from the value a plausible wrong formula would give, so a
pass is not luck.

Papers: KgCoOp (arXiv 2303.13283), CLIP-Adapter (arXiv 2110.04544), CoCoOp (arXiv 2203.05557).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlkit import adapt
from vlkit.engine.task import loss_terms

NAMES = ["zero", "one", "two", "three"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}."]


def clip_weights(model, names, templates) -> torch.Tensor:
    """(n_cls, D) zero-shot weights by hand: per class, mean of the normalised prompt features, renormalised."""
    with torch.no_grad():
        rows = [F.normalize(model.encode_text([t.format(n) for t in templates]), dim=-1).mean(0) for n in names]
    return F.normalize(torch.stack(rows), dim=-1)


def cross_entropy(logits, labels) -> torch.Tensor:
    return -logits.log_softmax(-1)[torch.arange(len(labels)), labels].mean()


def linears(module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _embeds(model, n=6, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.embed_dim, generator=g) * scale  # unnormalised, as the cache holds them


# -- KgCoOp ------------------------------------------------------------------------------------
def _kgcoop(model):
    kg = adapt.build_method("kgcoop", model, NAMES, TEMPLATES)
    with torch.no_grad():  # move the context away from "a photo of a" so the regulariser is not ~0
        kg.context.ctx.add_(torch.randn(kg.context.ctx.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    return kg


def test_kgcoop_loss_is_ce_plus_lambda_times_one_minus_mean_cosine(tiny_model):
    kg = _kgcoop(tiny_model)
    assert kg.config.kg_weight == 8.0  # lambda of the paper
    f, labels = _embeds(tiny_model), torch.tensor([0, 1, 2, 3, 0, 1])
    kg.train()
    out = kg({"image_embeds": f, "labels": labels})
    loss, _ = loss_terms(out)  # what the engine backpropagates: the sum of the *_loss keys
    assert sorted(k for k in out if k.endswith("_loss")) == ["ce_loss", "kg_loss"]

    with torch.no_grad():
        text = kg.text_features()  # (n_cls, D): the method's prompted text features
        target = clip_weights(tiny_model, NAMES, TEMPLATES)  # (n_cls, D): frozen hand-crafted features
        cos = (text * target).sum(-1) / (text.norm(dim=-1) * target.norm(dim=-1))
        kg_loss = 8.0 * (1.0 - cos.mean())
        logits = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ F.normalize(text, dim=-1).T
        ce = cross_entropy(logits, labels)
    assert kg_loss > 0.05  # big enough that a flipped sign or a missing lambda shows
    assert out["kg_loss"].item() == pytest.approx(float(kg_loss), rel=1e-4)
    assert out["ce_loss"].item() == pytest.approx(float(ce), rel=1e-4)
    assert loss.item() == pytest.approx(float(ce + kg_loss), rel=1e-4)


def test_kgcoop_regulariser_pulls_prompts_towards_the_hand_crafted_features(tiny_model):
    """A gradient step on kg_loss alone raises the cosine to the hand-crafted features."""
    kg = _kgcoop(tiny_model)
    target = clip_weights(tiny_model, NAMES, TEMPLATES)
    batch = {"image_embeds": _embeds(tiny_model), "labels": torch.tensor([0, 1, 2, 3, 0, 1])}

    def mean_cos():
        with torch.no_grad():
            return float(F.cosine_similarity(kg.text_features(), target, dim=-1).mean())

    before = mean_cos()
    kg({**batch})["kg_loss"].backward()
    with torch.no_grad():
        kg.context.ctx.sub_(0.05 * kg.context.ctx.grad)
    assert mean_cos() > before + 1e-4


# -- CLIP-Adapter ------------------------------------------------------------------------------
def test_clip_adapter_logits_by_hand(tiny_model):
    torch.manual_seed(0)
    ca = adapt.build_method("clip_adapter", tiny_model, NAMES, TEMPLATES)
    assert ca.config.ratio == 0.2  # the paper's residual ratio
    d = tiny_model.embed_dim
    down, up = linears(ca.adapter)
    assert down.bias is None and up.bias is None  # no biases (paper)
    assert tuple(down.weight.shape) == (d // 4, d) and tuple(up.weight.shape) == (d, d // 4)

    f = _embeds(tiny_model)
    with torch.no_grad():
        a = (f @ down.weight.T).relu() @ up.weight.T  # A(f) = ReLU(W2 ReLU(W1 f))
        a = a.relu()
        w = clip_weights(tiny_model, NAMES, TEMPLATES)
        scale = tiny_model.logit_scale.exp()
        expected = scale * F.normalize(0.2 * a + 0.8 * f, dim=-1) @ w.T
        swapped = scale * F.normalize(0.8 * a + 0.2 * f, dim=-1) @ w.T
        got = ca.logits({"image_embeds": f})
    assert (expected - swapped).abs().max() > 1e-2  # the ratio matters for these weights
    assert torch.allclose(got, expected, atol=1e-5)


# -- CoCoOp ------------------------------------------------------------------------------------
def _cocoop(model):
    co = adapt.build_method("cocoop", model, NAMES, None)  # 4 tokens from "a photo of a"
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in co.meta_net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)  # a shift well above float noise
    return co


def _hand_logits(model, co, f_raw, with_shift=True):
    """CoCoOp by hand: ctx + pi(x) written over "a photo of a" in each class prompt, full length."""
    f = F.normalize(f_raw, dim=-1)  # the meta-net sees the normalised image feature
    lin1, lin2 = linears(co.meta_net)
    shift = (f @ lin1.weight.T + lin1.bias).relu() @ lin2.weight.T + lin2.bias  # (B, W)
    tokens = model.tokenize([f"a photo of a {n}." for n in NAMES])  # [SOS] a photo of a <name> . [EOT]
    base = model.text.embed_tokens(tokens["input_ids"])  # (n_cls, L, W)
    rows, texts = [], []
    for b in range(len(f)):
        ctx = co.ctx + (shift[b] if with_shift else 0)  # (4, W)
        embeds = base.clone()
        embeds[:, 1:5] = ctx  # positions 1..4 hold "a photo of a"
        text = F.normalize(model.project_text(model.text.forward_embeddings(embeds, tokens)), dim=-1)
        texts.append(text)
        rows.append(model.logit_scale.exp() * text @ f[b])
    return torch.stack(rows), torch.stack(texts)  # (B, n_cls), (B, n_cls, D)


def test_cocoop_logits_by_hand_with_the_meta_net_shift(tiny_model):
    co = _cocoop(tiny_model)
    d, w = tiny_model.embed_dim, tiny_model.text.width
    assert [tuple(m.weight.shape) for m in linears(co.meta_net)] == [(d // 16, d), (w, d // 16)]
    f_raw = _embeds(tiny_model, n=3)
    with torch.no_grad():
        expected, texts = _hand_logits(tiny_model, co, f_raw)
        unshifted, _ = _hand_logits(tiny_model, co, f_raw, with_shift=False)
        got = co.logits({"image_embeds": f_raw})
        per_image = co.conditional_text_features(F.normalize(f_raw, dim=-1))  # (B, n_cls, D)
    assert (expected - unshifted).abs().max() > 1e-2  # the shift changes the logits visibly
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(per_image, texts, atol=1e-5)
    # two images, two sets of class prompts: the text features depend on the image
    assert (per_image[0] - per_image[1]).abs().max() > 1e-3
