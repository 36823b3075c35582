"""Method behaviour the second mutation pass (docs/testing.md, adapt/methods/) found untested:
constructor checks and their one-line messages, LoRA with one tower, the probe's C search and
the cache searches, each checked by hand on the tiny model."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from test_adapt_formulas import NAMES, TEMPLATES, clip_weights
from vlkit import adapt
from vlkit.adapt.methods.linear_probe import bisect_c
from vlkit.errors import UserError


def _images(model, n=3, seed=0):
    size = model.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _perturb_lora(lora, seed=4, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if ".B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


# -- every method --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["coop", "coop_csc", "cocoop", "kgcoop", "maple", "clip_adapter", "lora",
                                  "tip_adapter", "tip_adapter_f", "zeroshot", "zs_linear_probe", "linear_probe"])
def test_every_method_keeps_the_templates_it_was_given(tiny_model, name):
    # they are saved in method.json and reused by transfer(), also by methods whose prompts are learned
    method = adapt.build_method(name, tiny_model, NAMES, TEMPLATES[::-1])
    assert method.templates == TEMPLATES[::-1]


# -- LoRA ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("towers", [["image"], [], ["vision", "texts"]])
def test_lora_towers_must_be_a_non_empty_list_of_vision_text(tiny_model, towers):
    with pytest.raises(UserError) as e:
        adapt.build_method("lora", tiny_model, NAMES, None, {"towers": towers})
    assert str(e.value) == f"lora towers {towers} must be a non-empty list of vision, text"


def test_lora_unknown_rank_scaling_names_the_option_and_the_choices(tiny_model):
    with pytest.raises(UserError) as e:
        adapt.build_method("lora", tiny_model, NAMES, None, {"rank_scaling": "cubic"})
    assert str(e.value) == "unknown lora rank_scaling 'cubic'; valid: linear, sqrt"


def test_lora_tower_without_attention_names_the_tower_and_its_kind(cnn_model):
    with pytest.raises(UserError) as e:
        adapt.build_method("lora", cnn_model, ["a", "b"], None, {"towers": ["text", "vision"]})
    assert str(e.value) == ("method 'lora' needs attention layers in the vision tower, but this model's cnn vision "
                            "tower has none; adapt only the other tower (towers=[...]) or use a transformer tower "
                            "(e.g. preset:moji-lit-s)")


def test_lora_rank_one_scales_by_alpha(tiny_model):
    # alpha / sqrt(1) = alpha / 1 = alpha for both rules
    for rule in ("sqrt", "linear"):
        lora = adapt.build_method("lora", tiny_model, NAMES, None, {"rank": 1, "alpha": 3.0, "rank_scaling": rule})
        assert {t.factors.scaling for t in lora.targets} == {3.0}


@pytest.mark.parametrize("towers,prefixes", [(["text"], {"text"}), (["vision"], {"visual"}),
                                             (["vision", "text"], {"visual", "text"})])
def test_lora_adapts_only_the_asked_towers(tiny_model, towers, prefixes):
    lora = adapt.build_method("lora", tiny_model, NAMES, None, {"towers": towers})
    assert {t.name.split(".")[0] for t in lora.targets} == prefixes
    # the saved state holds the factors (named after the layers) and nothing else
    keys = set(lora.state_dict())
    assert keys and all(k.startswith("factors.") for k in keys)
    assert {k.split(".")[1].split("__")[0] for k in keys} == prefixes
    assert len(lora.targets) == 2 * len(prefixes)  # two attention layers per tiny tower
    assert lora.uses_image_tower() == ("vision" in towers)


def test_lora_vision_only_uses_the_hand_crafted_classifier_of_its_template(tiny_model):
    template = "a sketch of the {}."
    lora = adapt.build_method("lora", tiny_model, NAMES, TEMPLATES, {"towers": ["vision"], "template": template})
    lora.eval()
    _perturb_lora(lora)
    images = _images(tiny_model)
    with torch.no_grad():
        weights = clip_weights(tiny_model, NAMES, [template])  # one template: the prompt's own feature
        assert torch.allclose(lora.text_weights, weights, atol=1e-5)
        got = lora.logits({"images": images})
        merged = lora.merge()
        expected = tiny_model.logit_scale.exp() * merged.encode_image(images) @ weights.T
        frozen = tiny_model.logit_scale.exp() * tiny_model.encode_image(images) @ weights.T
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, frozen, atol=1e-3)  # the image tower really is adapted
    assert "text_weights" not in lora.state_dict()


def test_lora_text_only_adapts_the_prompts_and_reads_cached_image_features(tiny_model):
    templates = TEMPLATES[::-1]  # the first is not the default template "a photo of a {}."
    lora = adapt.build_method("lora", tiny_model, NAMES, templates, {"towers": ["text"]})
    lora.eval()
    assert lora.template == "a drawing of the {}."  # '': the data view's first template
    assert not hasattr(lora, "text_weights")
    tokens = tiny_model.tokenize([f"a drawing of the {n}." for n in NAMES])
    assert torch.equal(lora.input_ids, tokens["input_ids"]) and torch.equal(lora.attention_mask, tokens["attention_mask"])
    assert "input_ids" not in lora.state_dict() and "attention_mask" not in lora.state_dict()
    _perturb_lora(lora)
    f = torch.randn(3, tiny_model.embed_dim, generator=torch.Generator().manual_seed(5)) * 3
    with torch.no_grad():
        got = lora.logits({"image_embeds": f})  # no images: the cached features are enough
        merged = lora.merge()
        text = F.normalize(merged.encode_text(tokens), dim=-1)
        expected = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ text.T
        frozen = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ F.normalize(tiny_model.encode_text(tokens), dim=-1).T
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, frozen, atol=1e-3)


def test_lora_merged_logits_equal_the_adapted_logits_for_one_tower(tiny_model):
    lora = adapt.build_method("lora", tiny_model, NAMES, None, {"towers": ["text"]})
    lora.eval()
    _perturb_lora(lora, seed=6)
    images = _images(tiny_model, seed=7)
    with torch.no_grad():
        adapted = lora.logits({"images": images})
        merged_logits = lora.merged_logits(lora.merge(), {"images": images})
    assert torch.allclose(merged_logits, adapted, atol=1e-4)


# -- CoOp ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shots,epochs", [(1, 50), (2, 100), (4, 100), (5, 200), (8, 200), (16, 200)])
def test_coop_paper_epochs_per_shot_count(shots, epochs):
    # CoOp's configs: 50 epochs for 1 shot, 100 for 2 and 4, 200 for 8 and 16
    for name in ("coop", "coop_csc"):
        assert adapt.get_method(name).paper_schedule(shots) == {"epochs": epochs}


@pytest.mark.parametrize("name", ["coop", "coop_csc"])
def test_coop_phrase_init_takes_the_whole_phrase_whatever_n_ctx(tiny_model, name):
    coop = adapt.build_method(name, tiny_model, NAMES, None, {"ctx_init": "a photo of a", "n_ctx": 2})
    assert coop.prompts.n_ctx == 4  # "a photo of a" is four tokens; n_ctx is ignored, as CoOp
    with torch.no_grad():
        expected = tiny_model.encode_text([f"a photo of a {n}." for n in NAMES])
        assert torch.allclose(coop.text_features(), F.normalize(expected, dim=-1), atol=1e-5)


def _moved(method, seed=3, std=0.3):
    with torch.no_grad():
        ctx = method.context.ctx
        ctx.add_(torch.randn(ctx.shape, generator=torch.Generator().manual_seed(seed)) * std)
    return method


@pytest.mark.parametrize("name", ["coop", "coop_csc"])
def test_coop_logits_and_loss_by_hand(tiny_model, name):
    coop = _moved(adapt.build_method(name, tiny_model, NAMES, None, {"n_ctx": 3}))
    f = torch.randn(5, tiny_model.embed_dim, generator=torch.Generator().manual_seed(8)) * 3
    labels = torch.tensor([0, 1, 2, 3, 1])
    tokens = tiny_model.tokenize([f"X X X {n}." for n in NAMES])  # [SOS] X X X <name> . [EOT]
    with torch.no_grad():
        embeds = tiny_model.text.embed_tokens(tokens["input_ids"]).clone()  # (n_cls, L, W)
        embeds[:, 1:4] = coop.context.ctx  # (3, W) shared, or (n_cls, 3, W) per class
        text = F.normalize(tiny_model.project_text(tiny_model.text.forward_embeddings(embeds, tokens)), dim=-1)
        expected = tiny_model.logit_scale.exp() * F.normalize(f, dim=-1) @ text.T
        out = coop({"image_embeds": f, "labels": labels})
        logits, got_text = coop.logits_and_text({"image_embeds": f})
    assert torch.allclose(got_text, text, atol=1e-5)
    assert torch.allclose(logits, expected, atol=1e-4) and torch.allclose(out["logits"], expected, atol=1e-4)
    assert torch.allclose(coop.logits({"image_embeds": f}), expected, atol=1e-4)
    assert out["ce_loss"].item() == pytest.approx(F.cross_entropy(expected, labels).item(), abs=1e-5)
    assert "ce_loss" not in coop({"image_embeds": f})  # no labels: no loss


def test_coop_context_is_shared_by_all_classes_and_transfers_to_new_ones(tiny_model):
    coop = _moved(adapt.build_method("coop", tiny_model, NAMES, None, {"ctx_init": "a photo of a"}))
    assert tuple(coop.context.ctx.shape) == (4, tiny_model.text.width)  # one context, not one per class
    other = coop.transfer(["cat", "dog"])
    assert torch.equal(other.context.ctx, coop.context.ctx)
    with torch.no_grad():
        assert other.text_features().shape == (2, tiny_model.embed_dim)


def test_coop_prompt_chunks_give_the_same_features(tiny_model):
    whole = _moved(adapt.build_method("coop", tiny_model, NAMES, None, {"n_ctx": 3}))
    chunked = adapt.build_method("coop", tiny_model, NAMES, None, {"n_ctx": 3, "prompt_chunk": 3})
    with torch.no_grad():
        chunked.context.ctx.copy_(whole.context.ctx)
        assert torch.allclose(chunked.text_features(), whole.text_features(), atol=1e-5)


# -- Tip-Adapter -----------------------------------------------------------------------------------
def _tip(model, name="tip_adapter", options=None, seed=0):
    views = torch.randn(3, 8, model.embed_dim, generator=torch.Generator().manual_seed(seed)) * 2
    tip = adapt.build_method(name, model, NAMES, TEMPLATES, options)
    tip.prepare(views, torch.arange(8) % 4)
    return tip, views


def test_tip_adapter_describes_its_search(tiny_model):
    tip = adapt.build_method("tip_adapter", tiny_model, NAMES, TEMPLATES)
    assert tip.describe_selection(None) == "none (training-free); alpha, beta searched on validation"
    tip_f = adapt.build_method("tip_adapter_f", tiny_model, NAMES, TEMPLATES)
    assert tip_f.describe_selection("val") == "best validation epoch; alpha, beta searched on validation"
    fixed = adapt.build_method("tip_adapter", tiny_model, NAMES, TEMPLATES, {"search": False})
    assert fixed.describe_selection(None) == "none (training-free)"


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_tip_adapter_saves_its_cache_and_search_but_not_the_text_weights(tiny_model, name):
    tip, _ = _tip(tiny_model, name)
    assert set(tip.state_dict()) == {"cache_keys", "cache_values", "alpha", "beta"}  # recomputed: text_weights


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_tip_adapter_without_search_keeps_the_configured_alpha_beta(tiny_model, name):
    tip, views = _tip(tiny_model, name, {"search": False, "init_alpha": 2.5, "init_beta": 4.0})
    assert (float(tip.alpha), float(tip.beta)) == (2.5, 4.0)
    assert tip.tune(views[0], torch.arange(8) % 4) == {}
    assert (float(tip.alpha), float(tip.beta)) == (2.5, 4.0)
    searching, _ = _tip(tiny_model, name, {"init_alpha": 2.5, "init_beta": 4.0})
    assert searching.tune(views[0][:0], torch.zeros(0, dtype=torch.long)) == {}  # no validation set: nothing to search
    assert (float(searching.alpha), float(searching.beta)) == (2.5, 4.0)
    assert set(searching.tune(views[0], torch.arange(8) % 4)) == {"val_acc", "alpha", "beta"}


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_tip_adapter_saved_cache_loads_into_a_fresh_method(tiny_model, name):
    tip, views = _tip(tiny_model, name, {"init_alpha": 1.5, "init_beta": 3.0})
    fresh = adapt.build_method(name, tiny_model, NAMES, TEMPLATES)
    assert tuple(fresh.cache_keys.shape) == (0, tiny_model.embed_dim) and tuple(fresh.cache_values.shape) == (0, 4)
    fresh.load_adapter(tip.adapter_tensors())  # the empty cache takes the saved (8, D) / (8, 4) shapes
    assert tuple(fresh.cache_keys.shape) == (8, tiny_model.embed_dim) and tuple(fresh.cache_values.shape) == (8, 4)
    assert (float(fresh.alpha), float(fresh.beta)) == (1.5, 3.0)
    assert isinstance(fresh.cache_keys, torch.nn.Parameter) == (name == "tip_adapter_f")
    f = views[1, :4]
    with torch.no_grad():
        assert torch.allclose(fresh.logits({"image_embeds": f}), tip.logits({"image_embeds": f}), atol=1e-6)


def test_tip_adapter_f_trains_for_twenty_epochs():
    assert adapt.get_method("tip_adapter_f").paper_schedule(16) == {"epochs": 20}


# -- the CLIP / CoOp linear probe ------------------------------------------------------------------
def _blobs(n_per_class, classes, d, seed=0, spread=0.1):
    """Well separated classes: class k sits at 3 e_k plus small noise, (N, D) and (N,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([k for k in classes for _ in range(n_per_class)])
    x = 3 * torch.eye(d)[labels] + spread * torch.randn(len(labels), d, generator=g)
    return x, labels


def test_linear_probe_describes_what_it_searched(tiny_model):
    assert adapt.build_method("linear_probe", tiny_model, NAMES, None).describe_selection(None) == "C searched on validation"
    fixed = adapt.build_method("linear_probe", tiny_model, NAMES, None, {"search": False, "C": 0.25})
    assert fixed.describe_selection(None) == "C = 0.25"


def test_linear_probe_trains_on_every_view(tiny_model):
    from sklearn.linear_model import LogisticRegression

    d = tiny_model.embed_dim
    x0, labels = _blobs(3, [0, 1, 2, 3], d, seed=1, spread=1.0)
    x1, _ = _blobs(3, [0, 1, 2, 3], d, seed=2, spread=1.0)
    probe = adapt.build_method("linear_probe", tiny_model, NAMES, None, {"C": 0.3})
    probe.prepare(torch.stack([x0, x1]), labels)  # (2 views, N, D): 2N samples, labels repeated
    both = torch.cat([x0, x1]).double().numpy()
    clf = LogisticRegression(C=0.3, max_iter=1000).fit(both, torch.cat([labels, labels]).numpy())
    got = probe.logits({"image_embeds": x0})
    assert torch.allclose(got.double(), torch.as_tensor(clf.decision_function(x0.double().numpy())), atol=1e-4)


def test_linear_probe_with_one_training_class_always_predicts_it(tiny_model):
    x, labels = _blobs(3, [2], tiny_model.embed_dim)
    probe = adapt.build_method("linear_probe", tiny_model, NAMES, None)
    probe.prepare(x[None], labels)
    got = probe.logits({"image_embeds": torch.randn(2, tiny_model.embed_dim)})
    assert torch.equal(got, torch.tensor([[0.0, 0.0, 1.0, 0.0]] * 2))
    # the search cannot score a one-class fit: every C scores 0, the ties keep the smaller end
    tuned = probe.tune(x, labels)
    assert tuned == {"C": pytest.approx(1e5), "val_acc": 0.0, "n_fits": 7 + 2 * 8}
    assert torch.equal(probe.logits({"image_embeds": x[:1]}), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_linear_probe_never_predicts_a_class_without_training_samples(tiny_model):
    x, labels = _blobs(3, [0, 1, 3], tiny_model.embed_dim)
    probe = adapt.build_method("linear_probe", tiny_model, NAMES, None)
    probe.prepare(x[None], labels)
    logits = probe.logits({"image_embeds": x})
    assert torch.isinf(logits[:, 2]).all() and (logits[:, 2] < 0).all()
    assert torch.isfinite(logits[:, [0, 1, 3]]).all()
    assert torch.equal(logits.argmax(1), labels)


def test_linear_probe_search_on_separable_data_keeps_the_first_coarse_peak(tiny_model):
    # every C classifies well separated blobs perfectly: the coarse peak is the first C (1e6), and
    # the bisection's ties keep the smaller end, 10^5, at every step
    x, labels = _blobs(2, [0, 1, 2, 3], tiny_model.embed_dim)
    xv, yv = _blobs(2, [0, 1, 2, 3], tiny_model.embed_dim, seed=5)
    for steps, c in ((0, 1e6), (1, 1e5), (3, 1e5)):
        probe = adapt.build_method("linear_probe", tiny_model, NAMES, None, {"search_steps": steps})
        probe.prepare(x[None], labels)
        assert probe.tune(xv, yv) == {"C": pytest.approx(c), "val_acc": 1.0, "n_fits": 7 + 2 * steps}


def test_linear_probe_search_needs_training_data_validation_and_the_option(tiny_model):
    x, labels = _blobs(2, [0, 1, 2, 3], tiny_model.embed_dim)
    probe = adapt.build_method("linear_probe", tiny_model, NAMES, None)
    assert probe.tune(x, labels) == {}  # nothing prepared yet
    probe.prepare(x[None], labels)
    assert probe.tune(x[:0], labels[:0]) == {}
    off = adapt.build_method("linear_probe", tiny_model, NAMES, None, {"search": False})
    off.prepare(x[None], labels)
    assert off.tune(x, labels) == {}


# -- CoCoOp -------------------------------------------------------------------------------------
def test_cocoop_random_context_has_n_ctx_tokens(tiny_model):
    co = adapt.build_method("cocoop", tiny_model, NAMES, None, {"ctx_init": "", "n_ctx": 3})
    assert tuple(co.ctx.shape) == (3, tiny_model.text.width) and co.prompts.n_ctx == 3
    assert 0.01 < float(co.ctx.detach().std()) < 0.03  # N(0, 0.02^2)
    phrase = adapt.build_method("cocoop", tiny_model, NAMES, None, {"n_ctx": 2})  # the phrase decides: 4 tokens
    assert tuple(phrase.ctx.shape) == (4, tiny_model.text.width)


def test_cocoop_saved_state_names_the_context_and_the_meta_net_layers(tiny_model):
    # the adapter file's keys (a saved CoCoOp must load into a later vlkit)
    co = adapt.build_method("cocoop", tiny_model, NAMES, None)
    assert set(co.state_dict()) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                    "meta_net.linear2.weight", "meta_net.linear2.bias"}


def test_cocoop_meta_net_hidden_width_is_at_least_one(cnn_model_spec):
    from vlkit import models

    small = models.load({**cnn_model_spec, "embed_dim": 8})  # 8 // 16 = 0: one hidden unit
    co = adapt.build_method("cocoop", small, NAMES, None)
    first, second = [m for m in co.meta_net if isinstance(m, torch.nn.Linear)]
    assert tuple(first.weight.shape) == (1, 8) and tuple(second.weight.shape) == (small.text.width, 1)


# -- MaPLe --------------------------------------------------------------------------------------
def test_maple_needs_at_least_one_context_token(tiny_model):
    with pytest.raises(UserError) as e:
        adapt.build_method("maple", tiny_model, NAMES, None, {"n_ctx": 0})
    assert str(e.value) == "maple needs n_ctx >= 1, got 0"
    one = adapt.build_method("maple", tiny_model, NAMES, None, {"n_ctx": 1})
    assert tuple(one.ctx.shape) == (1, tiny_model.text.width)


@pytest.mark.parametrize("asked,depth", [(0, 1), (1, 1), (2, 2), (9, 2)])
def test_maple_depth_is_capped_by_the_towers_and_at_least_one(tiny_model, asked, depth):
    maple = adapt.build_method("maple", tiny_model, NAMES, None, {"prompt_depth": asked})
    assert maple.depth == depth  # the tiny towers have 2 layers each
    assert len(maple.deep_text) == depth - 1 and len(maple.couplings) == depth
    assert sorted(maple.vision_prompts()) == list(range(depth))


def test_maple_depth_is_capped_by_the_shallower_tower():
    from test_adapt_references import THREE_LAYERS
    from vlkit import models

    cfg = THREE_LAYERS["model_cfg"]
    two_vision_layers = {**THREE_LAYERS, "model_cfg": {**cfg, "vision_cfg": {**cfg["vision_cfg"], "layers": 2}}}
    assert adapt.build_method("maple", models.load(two_vision_layers), NAMES, None).depth == 2  # text has 3


def test_maple_starts_from_the_phrase_with_its_first_tokens_learned(tiny_model):
    # n_ctx 2 of "a photo of a": the context is the embeddings of "a photo", the rest stays text;
    # with depth 1 (no deep prompts) the text features are the written prompt's
    maple = adapt.build_method("maple", tiny_model, NAMES, None, {"prompt_depth": 1})
    ids = tiny_model.tokenize(["a photo of a"])["input_ids"]
    with torch.no_grad():
        assert torch.allclose(maple.ctx, tiny_model.text.embed_tokens(ids)[0, 1:3])
        expected = F.normalize(tiny_model.encode_text([f"a photo of a {n}." for n in NAMES]), dim=-1)
        assert torch.allclose(maple.text_features(), expected, atol=1e-5)


def test_maple_deep_text_prompts_are_small_random_draws(tiny_model):
    from test_adapt_references import THREE_LAYERS
    from vlkit import models

    maple = adapt.build_method("maple", models.load(THREE_LAYERS), NAMES, None, {"prompt_depth": 3})
    deep = torch.stack([p.detach() for p in maple.deep_text])  # (2, n_ctx, W)
    assert deep.shape == (2, 2, 32)
    assert 0.01 < float(deep.std()) < 0.03 and not torch.equal(deep[0], deep[1])  # N(0, 0.02^2), independent


def test_linear_probe_fits_with_the_configured_iteration_budget(tiny_model):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, labels = _blobs(3, [0, 1, 2, 3], tiny_model.embed_dim, seed=3, spread=2.0)
    probe = adapt.build_method("linear_probe", tiny_model, NAMES, None, {"C": 100.0, "max_iter": 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe.prepare(x[None], labels)
    assert not caught  # max_iter ends a fit quietly, as lpclip
    xs = x.double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short = LogisticRegression(C=100.0, max_iter=3).fit(xs, labels.numpy()).decision_function(xs)
        full = LogisticRegression(C=100.0, max_iter=100).fit(xs, labels.numpy()).decision_function(xs)
    assert abs(short - full).max() > 1e-2  # three iterations do not converge here
    got = probe.logits({"image_embeds": x})
    assert torch.allclose(got.double(), torch.as_tensor(short), atol=1e-4)
    # features in another precision (a float64 cache) give the same logits
    assert torch.allclose(probe.logits({"image_embeds": x.double()}), got)


def test_bisection_reports_every_c_it_fitted():
    chosen, tried = bisect_c(lambda c: 1.0 if c > 100 else 0.5, 100.0, 2)
    # log10 [1, 3]: 0.5 < 1, keep 10^3, interval [2, 3]; then [2, 3]: 0.5 < 1, keep 10^3 again
    assert chosen == pytest.approx(1000.0)
    assert [(pytest.approx(c), a) for c, a in tried] == [(10.0, 0.5), (1000.0, 1.0), (100.0, 0.5), (1000.0, 1.0)]


def test_maple_logits_are_scaled_cosines_of_its_two_prompted_towers(tiny_model):
    maple = adapt.build_method("maple", tiny_model, NAMES, None)
    batch = {"images": _images(tiny_model, n=2, seed=9)}
    with torch.no_grad():
        image, text = maple.image_features(batch), maple.text_features()
        assert torch.allclose(image.norm(dim=-1), torch.ones(2), atol=1e-5)
        expected = tiny_model.logit_scale.exp() * image @ text.T
        assert torch.allclose(maple.logits(batch), expected, atol=1e-4)


def test_the_methods_a_per_class_adapter_error_suggests_can_classify_other_classes(tiny_model):
    """The hint lists real methods, each of which transfers to new class names by default."""
    from vlkit.errors import UserError

    probe = adapt.build_method("linear_probe", tiny_model, NAMES, None)
    with pytest.raises(UserError) as e:
        probe.transfer(["a", "b"])
    named = re.search(r"\(([a-z_, ]+)\)$", str(e.value)).group(1).split(", ")
    assert {"coop", "prograd", "pre", "biomedcoop", "promptsrc", "lora"} <= set(named)
    for name in named:
        assert adapt.build_method(name, tiny_model, NAMES, None).is_class_agnostic(), name
