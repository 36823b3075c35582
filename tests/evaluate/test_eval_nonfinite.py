"""Non-finite features or logits are refused by every suite, in one line naming suite and model.

Issue 16, item 1: a model whose features are NaN scored R@1 = MRR = 1.0 in retrieval (NaN
compares false, so no negative ever beats the positive) and metrics.json kept the fake values.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EvalContext, run
from vlkit.evaluate.base import require_finite


@pytest.fixture
def nan_image_model(fakes):
    class NaNImages(fakes.Model):
        def encode_image(self, images, normalize=True):
            feats = super().encode_image(images, normalize)
            feats[::3] = math.nan  # every third image: a partly broken tower is still refused
            return feats

        def fingerprint(self):
            return "nan-image-model"

    return NaNImages()


@pytest.fixture
def inf_text_model(fakes):
    class InfTexts(fakes.Model):
        def encode_text(self, texts, normalize=True):
            return torch.full((len(texts), self.dim), math.inf)

        def fingerprint(self):
            return "inf-text-model"

    return InfTexts()


def _refused(tmp_path, model, data, suite, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        run(model, data, [suite], out_dir=tmp_path / suite, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / suite / "metrics.json").exists()
    return message


@pytest.mark.parametrize("suite", ["retrieval", "zeroshot", "linear_probe", "calibration", "robustness"])
@pytest.mark.parametrize("cache", [False, True])
def test_nan_image_features_are_refused_by_every_suite(tmp_path, nan_image_model, fake_data, suite, cache):
    message = _refused(tmp_path, nan_image_model, fake_data, suite, cache=cache)
    assert message.startswith(f"{suite}: model ") and "nan-image-model" in message
    found = re.search(r"NaN or infinite image features on split '(\w+)' \((\d+) of (\d+) rows\)", message)
    split, n_bad, n = found[1], int(found[2]), int(found[3])
    assert n == len(fake_data[split]) and n_bad == math.ceil(n / 3)  # rows 0, 3, 6, ... are NaN


@pytest.mark.parametrize("suite", ["retrieval", "zeroshot", "compositional"])
def test_infinite_text_features_are_refused(tmp_path, inf_text_model, fake_data, suite):
    message = _refused(tmp_path, inf_text_model, fake_data, suite)
    assert message.startswith(f"{suite}: model ") and "inf-text-model" in message
    assert "NaN or infinite text features" in message


def test_model_given_by_spec_is_named_by_its_spec(tmp_path, nan_image_model, fake_data, monkeypatch):
    import vlkit.models

    monkeypatch.setattr(vlkit.models, "load", lambda spec: nan_image_model)
    message = _refused(tmp_path, "my-spec:v1", fake_data, "retrieval")
    assert message.startswith("retrieval: model 'my-spec:v1' gives NaN")


def test_nan_logit_scale_is_refused_where_a_suite_uses_it(tmp_path, fakes, fake_data):
    model = fakes.Model()
    with torch.no_grad():
        model.logit_scale.fill_(math.nan)
    for suite in ("calibration", "conformal"):  # softmax at the model's own scale
        message = _refused(tmp_path, model, fake_data, suite)
        assert message.startswith(f"{suite}: model FakeModel") and "a logit_scale (1 of 1 rows)" in message
    # zero-shot accuracy (CLIP_benchmark's fixed scale) and retrieval never use it: they still run
    out = run(model, fake_data, ["zeroshot", "retrieval"], out_dir=tmp_path / "ok")
    assert out["metrics"]["zeroshot/acc1"] > 0.9
    assert (tmp_path / "ok" / "metrics.json").exists()


def test_array_context_refuses_nan_logits_and_features():
    labels = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([[1.0, 0.0], [0.0, math.nan], [2.0, 1.0], [0.0, 1.0]])
    ctx = EvalContext.from_arrays(logits=logits, labels=labels, classnames=["a", "b"])
    from vlkit.evaluate.base import EVALUATORS

    with ctx.for_suite("conformal"), pytest.raises(UserError, match=r"^conformal: model \(arrays 'arrays'\) gives "
                                                                    r"NaN or infinite logits on split 'test' \(1 of 4"):
        EVALUATORS.get("conformal")()(ctx)
    feats = torch.randn(4, 3)
    feats[2, 1] = -math.inf
    ctx = EvalContext.from_arrays(image_features=feats, labels=labels)
    with ctx.for_suite("linear_probe"), pytest.raises(UserError, match="linear_probe: .* image features"):
        ctx.image_features("test")


def test_require_finite_counts_bad_rows_and_passes_finite_values():
    ok = torch.randn(5, 2)
    assert require_finite(ok, "x", "m", "s") is ok
    assert require_finite(torch.tensor([1, 2]), "x", "m", None).tolist() == [1, 2]  # integers cannot be NaN
    bad = torch.zeros(5, 2)
    bad[1, 0], bad[1, 1], bad[3, 1] = math.nan, math.inf, -math.inf
    with pytest.raises(UserError, match=r"^s: model m gives NaN or infinite x \(2 of 5 rows\)"):
        require_finite(bad, "x", "m", "s")
    with pytest.raises(UserError, match=r"^model m gives NaN or infinite scale \(1 of 1 rows\)"):
        require_finite(math.nan, "scale", "m", None)


def test_the_model_name_is_only_built_for_an_error():
    calls = []

    def name():
        calls.append(1)
        return "m"

    require_finite(torch.ones(3), "x", name, "s")
    assert calls == []
    with pytest.raises(UserError, match="^s: model m gives"):
        require_finite(torch.tensor([math.inf]), "x", name, "s")
    assert calls == [1]


def test_vlkit_eval_of_a_saved_model_with_nan_weights_is_one_line_and_writes_nothing(tmp_path, capsys):
    """The issue's reproduction, as a user meets it: a saved model whose image tower is NaN."""
    from vlkit import models
    from vlkit.cli import main

    model = models.load("preset:tiny-clip")
    with torch.no_grad():
        for p in model.visual.parameters():
            p.fill_(math.nan)
    model.save(tmp_path / "nan-model")
    capsys.readouterr()
    with pytest.warns(UserWarning, match="not caching them"):  # the feature cache's own warning
        rc = main(["eval", str(tmp_path / "nan-model"), "--data", "digits", "--suite", "retrieval,zeroshot",
                   "--out", str(tmp_path / "run")])
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                  if not line.startswith("vlkit: encoding "))  # the progress line of the encoding that ran
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"vlkit: error: retrieval: model {str(tmp_path / 'nan-model')!r} gives NaN or infinite "
                          "image features on split 'test' (360 of 360 rows)")
    assert not (tmp_path / "run" / "metrics.json").exists()
