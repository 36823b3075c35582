"""The style-shift suite on a real (tiny) model and openmoji: each style's numbers are what the
retrieval and zero-shot suites report on that style's spec, and the ratios are theirs."""

from __future__ import annotations

import math

import pytest

import vlkit.models
from vlkit.errors import UserError
from vlkit.evaluate import EvalContext, run

SPEC = "openmoji:concept@skin_tones=false,fractions=[0.97,0.01,0.02]"  # about 38 test concepts


@pytest.fixture(scope="module")
def tiny_clip():
    return vlkit.models.load("preset:tiny-clip")


def test_per_style_metrics_equal_the_suites_run_on_that_style(tiny_clip):
    options = {"style_shift": {"styles": ["edges", "grey"]}}  # captions=first: its default
    out = run(tiny_clip, SPEC, ["style_shift"], options=options)["metrics"]
    for style in ("original", "edges", "grey"):
        spec = SPEC + (f",style={style}" if style != "original" else "")
        direct = run(tiny_clip, spec, ["retrieval", "zeroshot"], options={"retrieval": {"captions": "first"}})
        for key in ("retrieval/text_retrieval_recall@1", "retrieval/image_retrieval_recall@5",
                    "retrieval/image_retrieval_mrr", "zeroshot/acc1", "zeroshot/mean_per_class_recall"):
            assert out[f"style_shift/{style}/{key.split('/')[1]}"] == direct["metrics"][key], (style, key)
    for style in ("edges", "grey"):
        for m in ("image_retrieval_recall@1", "text_retrieval_recall@1", "acc1"):
            orig, shifted = out[f"style_shift/original/{m}"], out[f"style_shift/{style}/{m}"]
            expect = shifted / orig if orig > 0 else math.nan
            got = out[f"style_shift/{style}/ratio/{m}"]
            assert (math.isnan(got) and math.isnan(expect)) or got == pytest.approx(expect)
    ratios = [out[f"style_shift/{s}/ratio/text_retrieval_recall@1"] for s in ("edges", "grey")]
    ratios = [r for r in ratios if not math.isnan(r)]
    got = out["style_shift/min_ratio/text_retrieval_recall@1"]
    assert got == pytest.approx(min(ratios)) if ratios else math.isnan(got)
    assert not any(k.startswith("style_shift/thick/") for k in out)  # only the styles asked for


def test_style_features_are_cached_apart(tiny_clip):
    ctx = EvalContext.from_model(tiny_clip, SPEC, cache=False)
    orig, edges = ctx.image_features("test"), ctx.restyled(style="edges").image_features("test")
    assert orig.shape == edges.shape and not bool((orig == edges).all())


def test_bad_inputs_get_one_line(tiny_clip, fake_model, fake_data):
    with pytest.raises(UserError, match=r"unknown style 'sketch'.*valid: .*edges"):
        run(tiny_clip, SPEC, ["style_shift"], options={"style_shift": {"styles": ["sketch"]}})
    with pytest.raises(UserError, match="style_shift: needs a model and a dataset spec"):
        run(fake_model, fake_data, ["style_shift"])
    with pytest.raises(UserError, match="no shapes option 'style'|unknown config key 'shapes.style'"):
        run(tiny_clip, "shapes:color@n_train=4,n_val=4,n_test=4,image_size=16", ["style_shift"])


def test_original_means_the_original_drawing_even_when_the_spec_names_a_style(tiny_clip):
    opts = {"style_shift": {"styles": ["grey"], "zeroshot": False}}
    plain = run(tiny_clip, SPEC, ["style_shift"], options=opts)["metrics"]
    styled = run(tiny_clip, SPEC + ",style=edges", ["style_shift"], options=opts)["metrics"]
    assert styled == plain
