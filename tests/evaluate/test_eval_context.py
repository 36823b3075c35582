"""EvalContext's memoised accessors and its one-line errors, through an array context."""

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EvalContext
from vlkit.evaluate.context import DEFAULT_TEMPLATES, as_split_dict


def test_image_features_are_normalised_float32_and_computed_once():
    feats = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    ctx = EvalContext.from_arrays(image_features=feats)
    out = ctx.image_features("test")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert ctx.image_features("test") is out


def test_missing_and_empty_splits_name_the_fix():
    ctx = EvalContext.from_arrays(image_features={"val": torch.eye(2), "test": torch.empty(0, 2)}, name="toy")
    with pytest.raises(UserError, match=r"^toy has no split 'train'; available: test, val; set the suite's split option$"):
        ctx.image_features("train")
    with pytest.raises(UserError, match=r"^split 'test' of toy is empty; evaluate on a split with samples "
                                        r"\(check filters and subset options\)$"):
        ctx.image_features("test")
    with ctx.for_suite("zeroshot"), pytest.raises(UserError, match=r"^zeroshot: toy has no split 'x'; available: "):
        ctx.labels("x")
    assert ctx.suite is None  # restored after the suite
    empty = EvalContext.from_arrays()
    with pytest.raises(UserError, match=r"^arrays has no split 'test'; available: none; "):
        empty.meta("test")


def test_negative_labels_mean_the_view_has_none():
    ctx = EvalContext.from_arrays(labels=torch.tensor([0, -1]), name="toy")
    with ctx.for_suite("linear_probe"), pytest.raises(
            UserError, match=r"^linear_probe: split 'test' of toy has no labels in view None; "
                             r"pick a labelled view, e\.g\. 'toy:<view>'$"):
        ctx.labels("test")
    ok = EvalContext.from_arrays(labels=[[1], [0]])
    assert ok.labels("test").tolist() == [1, 0] and ok.labels("test").dtype == torch.long


def test_encode_text_dedupes_batches_and_normalises():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([[float(len(t)), 0.0] if len(t) % 2 else [0.0, 2.0] for t in texts])

    ctx = EvalContext.from_arrays(encode_text=encode)
    ctx.text_batch_size = 2
    out = ctx.encode_text(["aaa", "bb", "aaa", "c", "dddd"])
    assert calls == [["aaa", "bb"], ["c", "dddd"]]  # distinct texts, in batches of 2
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    ctx.encode_text(["bb", "eeeee"])
    assert calls[-1] == ["eeeee"]  # only the new text
    assert ctx.encode_text([]).shape == (0, 0)


def test_a_text_encoder_returning_the_wrong_number_of_rows_is_caught():
    ctx = EvalContext.from_arrays(encode_text=lambda texts: torch.ones(1, 2))
    with pytest.raises(RuntimeError, match=r"^text encoder returned 1 rows for 2 texts$"):
        ctx.encode_text(["a", "b"])


def test_no_text_tower_names_the_fix():
    ctx = EvalContext.from_arrays(image_features=torch.eye(2))
    with ctx.for_suite("zeroshot"), pytest.raises(
            UserError, match=r"^zeroshot: the model has no text tower, and this suite encodes texts; load a dual "
                             r"encoder with both towers \(suites without text: linear_probe\)$"):
        ctx.encode_text(["a"])
    image = ctx._missing_tower("image")
    assert str(image) == ("the model has no image tower, and this suite encodes images; load a dual encoder with "
                          "both towers (suites without text: no image-free suite)")


def test_classnames_templates_scale_and_description():
    ctx = EvalContext.from_arrays(labels=torch.tensor([0]), classnames={"test": ["cat"]}, name="toy")
    assert ctx.classnames("test") == ["cat"] and ctx.has_classnames("test") and not ctx.has_classnames("val")
    assert ctx.templates("test") == DEFAULT_TEMPLATES == ["a photo of a {}."]
    assert ctx.logit_scale == 100.0
    assert EvalContext.from_arrays(logit_scale=20, templates=["x {}"]).logit_scale == 20.0
    assert EvalContext.from_arrays(templates=["x {}"]).templates("test") == ["x {}"]
    with ctx.for_suite("zeroshot"), pytest.raises(
            UserError, match=r"^zeroshot: toy \(view None\) has no class names; pick a labelled view, "
                             r"e\.g\. 'toy:<view>', or run retrieval instead$"):
        ctx.classnames("val")
    assert ctx.describe() == {"name": "toy", "view": None, "source": ctx.source}
    with pytest.raises(UserError, match=r"^this suite needs dataset objects; build the context from a model and data$"):
        ctx.dataset("test")


def test_memo_computes_once_and_seed_is_an_int():
    ctx = EvalContext.from_arrays(seed="3")
    calls = []
    assert ctx.memo("k", lambda: calls.append(1) or 5) == 5 and ctx.memo("k", lambda: calls.append(1) or 6) == 5
    assert calls == [1] and ctx.seed == 3


def test_fewshot_draws_within_positions_and_returns_them_sorted():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2])
    ctx = EvalContext.from_arrays(labels=labels, seed=1)
    picked = ctx.fewshot("test", 1, within=torch.tensor([6, 4, 3, 2]))
    assert picked.tolist() == sorted(picked.tolist())
    assert set(picked.tolist()) <= {2, 3, 4, 6} and sorted(labels[picked].tolist()) == [0, 1, 2]
    everything = ctx.fewshot("test", 5)
    assert everything.tolist() == list(range(7))


def test_as_split_dict():
    assert as_split_dict(None, "x") == {} and as_split_dict({"val": 1}, "x") == {"val": 1}
    assert as_split_dict([1, 2], "x") == {"test": [1, 2]}


def test_empty_labels_captions_and_meta_name_the_split():
    ctx = EvalContext.from_arrays(labels={"val": torch.tensor([], dtype=torch.long)}, captions={"val": []},
                                  meta={"val": []}, name="toy")
    for ask in (ctx.labels, ctx.captions, ctx.meta):
        with pytest.raises(UserError, match=r"^split 'val' of toy is empty; evaluate on a split with samples"):
            ask("val")


def test_captions_and_meta_are_memoised_apart():
    ctx = EvalContext.from_arrays(captions=[["a red circle"]], meta=[{"objects": []}])
    assert ctx.captions("test") == [["a red circle"]]
    assert ctx.meta("test") == [{"objects": []}]
    assert ctx.captions("test") is ctx.captions("test")


def test_a_context_without_a_text_source_has_no_text_tower():
    class Bare(EvalContext):
        pass

    with pytest.raises(UserError, match=r"^the model has no text tower, and this suite encodes texts"):
        Bare().encode_text(["a"])
    assert (Bare().seed, Bare().text_batch_size, Bare().logit_scale) == (0, 256, 100.0)


def test_from_model_passes_its_options(fake_model, fake_data):
    assert EvalContext.from_model(fake_model, fake_data, seed=7).seed == 7


def test_captions_and_meta_are_memoised_per_split():
    ctx = EvalContext.from_arrays(captions={"val": [["a"]], "test": [["b"]]}, meta={"val": [{"k": 1}], "test": [{"k": 2}]})
    assert (ctx.captions("val"), ctx.captions("test")) == ([["a"]], [["b"]])
    assert (ctx.meta("val"), ctx.meta("test")) == ([{"k": 1}], [{"k": 2}])
