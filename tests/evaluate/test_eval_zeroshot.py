import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.base import classification_chance, classification_metrics, mean_per_class_recall, topk_accuracy
from vlkit.evaluate.zeroshot import class_logits, context_classifier, zeroshot_classifier


def test_prompt_ensemble_normalises_each_prompt_before_averaging(lookup_encoder):
    # raw (unnormalised) prompt embeddings: per-prompt normalisation must come first
    table = {"x cat": [3.0, 0.0, 0.0], "y cat": [0.0, 1.0, 0.0], "x dog": [0.0, 0.0, 2.0], "y dog": [0.0, 0.0, 5.0]}
    w = zeroshot_classifier(lookup_encoder(table), ["cat", "dog"], ["x {}", "y {}"])
    assert w.shape == (3, 2)
    r = 1 / math.sqrt(2)  # mean of e0 and e1, renormalised
    torch.testing.assert_close(w[:, 0], torch.tensor([r, r, 0.0]))
    torch.testing.assert_close(w[:, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_acc5_is_nan_under_five_classes_and_counted_from_five():
    labels = torch.tensor([0, 1, 2, 3])
    logits = torch.eye(4)[[1, 1, 2, 0]]
    m = classification_metrics(logits, labels)
    assert math.isnan(m["acc5"])
    assert m["acc1"] == pytest.approx(0.5)
    # 6 classes: label 5 ranked 6th (miss at 5), label 0 ranked 5th (hit)
    logits6 = torch.tensor([[0.0, 6, 5, 4, 3, 2], [1.0, 6, 5, 4, 3, 2]])
    m6 = classification_metrics(logits6, torch.tensor([5, 0]))
    assert m6["acc5"] == pytest.approx(0.5)


def test_mean_per_class_recall_is_balanced_accuracy():
    labels = torch.tensor([0, 0, 0, 1])
    logits = torch.tensor([[1.0, 0.0]] * 4)  # always class 0
    m = classification_metrics(logits, labels)
    assert m["acc1"] == pytest.approx(0.75)
    assert m["mean_per_class_recall"] == pytest.approx(0.5)


def test_mean_per_class_recall_with_absent_classes_by_hand():
    """5 classes; 2 and 4 never occur in the labels but are predicted: they are left out of the
    mean (CLIP_benchmark calls sklearn's balanced_accuracy_score, which drops them)."""
    labels = torch.tensor([0, 0, 1, 1, 1, 3])
    pred = torch.tensor([0, 2, 1, 1, 0, 4])
    expected = (1 / 2 + 2 / 3 + 0 / 1) / 3  # recall of classes 0, 1, 3
    assert mean_per_class_recall(pred, labels, 5) == pytest.approx(expected)
    logits = F.one_hot(pred, 5).float()
    m = classification_metrics(logits, labels)
    assert m["mean_per_class_recall"] == pytest.approx(expected)
    assert m["acc1"] == pytest.approx(3 / 6)


def test_mean_per_class_recall_matches_sklearn_balanced_accuracy():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        n_classes = 3 + trial % 5
        labels = torch.randint(0, n_classes - 1, (30,), generator=g)  # the last class is always absent
        pred = torch.randint(0, n_classes, (30,), generator=g)
        with pytest.warns(UserWarning) if (pred == n_classes - 1).any() else nullcontext():
            expected = metrics.balanced_accuracy_score(labels.numpy(), pred.numpy())
        assert mean_per_class_recall(pred, labels, n_classes) == pytest.approx(expected)


def test_topk_accuracy_by_hand():
    logits = torch.tensor(
        [[0.1, 0.9, 0.0, 0.3, 0.2, 0.5, 0.4],  # label 1: rank 1
         [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4],  # label 1: rank 7 -> miss at 5
         [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]],  # label 2: rank 5 -> hit at 5, miss at 1
    )
    labels = torch.tensor([1, 1, 2])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 5) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 4) == pytest.approx(1 / 3)
    assert math.isnan(topk_accuracy(logits, labels, 8))  # k > n_classes
    assert topk_accuracy(logits, labels, 7) == 1.0


def test_acc1_acc5_match_clip_benchmark_recipe_with_ties():
    """CLIP_benchmark's accuracy(): the top max(k) indices of topk(sorted=True), hit if the label is
    among the first k. (Its function itself fails under numpy 2, so the recipe is restated here.)"""
    g = torch.Generator().manual_seed(1)
    logits = torch.randint(0, 3, (200, 8), generator=g).float()  # integer logits: many ties
    labels = torch.randint(0, 8, (200,), generator=g)
    top = logits.topk(5, 1, True, True).indices  # (N, 5)
    hits = top == labels[:, None]
    m = classification_metrics(logits, labels)
    assert m["acc1"] == hits[:, :1].any(1).float().mean().item()
    assert m["acc5"] == hits.any(1).float().mean().item()


def test_chance_levels():
    assert classification_chance(4)["acc1"] == 0.25 and math.isnan(classification_chance(4)["acc5"])
    assert classification_chance(10) == {"acc1": 0.1, "acc5": 0.5, "mean_per_class_recall": 0.1}
    assert classification_chance(5)["acc5"] == 1.0


def test_zeroshot_end_to_end_and_per_class_artifact(lookup_encoder):
    protos = torch.eye(3)
    table = {f"a {c}": protos[i] for i, c in enumerate(["red", "green", "blue"])}
    images = protos[[0, 1, 2, 2]] + 0.05
    ctx = EvalContext.from_arrays(image_features=images, labels=torch.tensor([0, 1, 2, 0]),
                                  classnames=["red", "green", "blue"], templates=["a {}"],
                                  encode_text=lookup_encoder(table))
    result = EVALUATORS.get("zeroshot")()(ctx)
    assert result["acc1"] == pytest.approx(0.75)
    assert math.isnan(result["acc5"])
    assert result.artifacts["per_class_acc1"] == {"red": 0.5, "green": 1.0, "blue": 1.0}
    assert result.chance["acc1"] == pytest.approx(1 / 3)
    assert all(isinstance(v, float) for v in result.values())
    assert {k: result.artifacts[k] for k in ("n_classes", "n_templates", "n_samples")} == {
        "n_classes": 3, "n_templates": 1, "n_samples": 4}


def test_class_logits_scale_given_logits_and_model_scale(lookup_encoder):
    table = {"a x": [1.0, 0.0], "a y": [0.0, 1.0]}
    images = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    ctx = EvalContext.from_arrays(image_features=images, labels=torch.tensor([1, 0]), classnames=["x", "y"],
                                  templates=["a {}"], encode_text=lookup_encoder(table), logit_scale=20.0)
    torch.testing.assert_close(class_logits(ctx, "test"), 20.0 * images)  # the model's own scale
    torch.testing.assert_close(class_logits(ctx, "test", scale=100.0), 100.0 * images)
    given = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    array_ctx = EvalContext.from_arrays(logits=given, labels=torch.tensor([1, 0]))
    assert class_logits(array_ctx, "test", scale=100.0) is given
    result = EVALUATORS.get("zeroshot")()(array_ctx)
    assert result["acc1"] == 1.0 and result.artifacts["n_templates"] == 0
    assert result.artifacts["per_class_acc1"] == {"0": 1.0, "1": 1.0}


def test_classifier_is_built_once_per_context(lookup_encoder):
    table = {"a x": [1.0, 0.0], "a y": [0.0, 1.0]}
    ctx = EvalContext.from_arrays(image_features=torch.tensor([[0.6, 0.8]]), labels=torch.tensor([1]),
                                  classnames=["x", "y"], templates=["a {}"], encode_text=lookup_encoder(table))
    EVALUATORS.get("zeroshot")()(ctx)
    cached = context_classifier(ctx, "test")
    torch.testing.assert_close(cached, torch.eye(2))
    assert context_classifier(ctx, "test") is cached  # built once per context


def test_view_without_classnames_is_a_user_error(lookup_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), labels=torch.tensor([0, 1]),
                                  encode_text=lookup_encoder({}))
    with ctx.for_suite("zeroshot"), pytest.raises(UserError, match="no class names"):
        EVALUATORS.get("zeroshot")()(ctx)


def test_template_without_placeholder_is_a_user_error(lookup_encoder):
    with pytest.raises(UserError, match=r"^prompt template 'a photo' has no '\{\}' for the class name; write e\.g\. 'a photo of a \{\}\.'$"):
        zeroshot_classifier(lookup_encoder({}), ["cat"], ["a photo"])


def test_each_split_is_classified_against_its_own_class_names(lookup_encoder):
    # OpenMoji's concept view names only the classes of its own split
    table = {"a x": [1.0, 0.0], "a y": [0.0, 1.0], "a z": [0.0, 1.0]}
    ctx = EvalContext.from_arrays(image_features={"val": torch.eye(2), "test": torch.eye(2)[[1]]},
                                  labels={"val": torch.tensor([0, 1]), "test": torch.tensor([0])},
                                  classnames={"val": ["x", "y"], "test": ["z"]}, templates=["a {}"],
                                  encode_text=lookup_encoder(table))
    assert EVALUATORS.get("zeroshot").from_options({"split": "val"})(ctx)["acc1"] == 1.0
    result = EVALUATORS.get("zeroshot")()(ctx)
    assert result["acc1"] == 1.0 and result.artifacts["per_class_acc1"] == {"z": 1.0}


def test_prompt_ensemble_by_hand_off_axis(lookup_encoder):
    """Each prompt embedding is normalised along its feature axis: (3, 4) -> (0.6, 0.8)."""
    table = {"x cat": [3.0, 4.0], "y cat": [1.0, 0.0], "x dog": [0.0, 2.0], "y dog": [1.0, 1.0]}
    w = zeroshot_classifier(lookup_encoder(table), ["cat", "dog"], ["x {}", "y {}"])
    cat = torch.tensor([0.8, 0.4]) / math.sqrt(0.8)  # mean of (0.6, 0.8) and (1, 0), renormalised
    dog = torch.tensor([0.5**0.5 / 2, (1 + 0.5**0.5) / 2])  # mean of (0, 1) and (r, r)
    torch.testing.assert_close(w, torch.stack([cat, dog / dog.norm()], dim=1))


def test_given_logits_with_class_names_name_the_per_class_table():
    for names in (["a", "b"], {"test": ["a", "b"]}):  # one list for every split, or per split
        ctx = EvalContext.from_arrays(logits=torch.tensor([[1.0, 0.0], [1.0, 0.0]]), labels=torch.tensor([0, 1]),
                                      classnames=names)
        assert EVALUATORS.get("zeroshot")()(ctx).artifacts["per_class_acc1"] == {"a": 1.0, "b": 0.0}


def test_logits_and_labels_of_different_length_are_refused():
    ctx = EvalContext.from_arrays(logits=torch.randn(3, 2), labels=torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match=r"^3 logits for 2 labels in split 'test'$"):
        EVALUATORS.get("zeroshot")()(ctx)
