import math

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.base import classification_metrics
from vlkit.evaluate.zeroshot import zeroshot_classifier


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


def test_view_without_classnames_is_a_user_error(lookup_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), labels=torch.tensor([0, 1]),
                                  encode_text=lookup_encoder({}))
    with ctx.for_suite("zeroshot"), pytest.raises(UserError, match="no class names"):
        EVALUATORS.get("zeroshot")()(ctx)


def test_template_without_placeholder_is_a_user_error(lookup_encoder):
    with pytest.raises(UserError, match="no '{}'"):
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
