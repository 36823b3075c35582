"""Scene captions from shapes metadata, and the robustness suite's caption variants, by hand."""

import random

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.robustness import false_objects
from vlkit.evaluate.scenes import first_relation, is_scene, phrase, require_scenes, scene_caption, vocabulary


def obj(color, shape, size=None, cx=None, cy=None):
    o = {"color": color, "shape": shape}
    o.update({k: v for k, v in (("size", size), ("cx", cx), ("cy", cy)) if v is not None})
    return o


def test_phrase_lists_the_named_attributes_then_the_shape():
    o = obj("red", "circle", "large")
    assert phrase(o) == "a red circle"
    assert phrase(o, ("size", "color")) == "a large red circle"
    assert phrase(obj("red", "circle"), ("size", "color")) == "a red circle"  # a missing size is skipped
    assert phrase(o, ()) == "a circle"


@pytest.mark.parametrize(
    "b, expected",
    [
        ((30.0, 12.0), (0, 1, "left of")),  # dx 20 >= |dy| 2, B to the right
        ((-10.0, 12.0), (0, 1, "right of")),
        ((12.0, 40.0), (0, 1, "above")),  # |dy| 30 > |dx| 2, B below (y grows downwards)
        ((12.0, -5.0), (0, 1, "below")),
        ((20.0, 20.0), (0, 1, "left of")),  # |dx| == |dy|: horizontal wins
    ],
)
def test_relation_derived_from_centers(b, expected):
    meta = {"objects": [obj("red", "circle", cx=10.0, cy=10.0), obj("blue", "square", cx=b[0], cy=b[1])]}
    assert first_relation(meta) == expected


def test_stated_relation_wins_and_out_of_range_ones_are_skipped():
    objs = [obj("red", "circle", cx=10.0, cy=10.0), obj("blue", "square", cx=30.0, cy=10.0)]
    assert first_relation({"objects": objs, "relations": [[1, 0, "below"]]}) == (1, 0, "below")
    assert first_relation({"objects": objs, "relations": [[0, 2, "above"], ["1", "0", "above"]]}) == (1, 0, "above")
    assert first_relation({"objects": objs, "relations": [[2, 0, "above"]]}) == (0, 1, "left of")  # falls back
    assert first_relation({"objects": [obj("red", "circle")] * 2}) is None  # no centers
    assert first_relation({"objects": [obj("red", "circle", cx=1.0, cy=1.0)]}) is None  # one object


def test_scene_caption_and_replaced_objects():
    meta = {"objects": [obj("red", "circle", "small"), obj("blue", "square", "large")], "relations": [[1, 0, "above"]]}
    assert scene_caption(meta) == "a blue square above a red circle"
    assert scene_caption(meta, ("size",)) == "a large square above a small circle"
    swapped = [obj("green", "star"), obj("yellow", "heart")]
    assert scene_caption(meta, objects=swapped) == "a yellow heart above a green star"
    assert scene_caption({"objects": [obj("red", "circle")]}) == "a red circle"


def test_vocabulary_in_first_seen_order():
    metas = [{"objects": [obj("red", "circle", "small"), obj("blue", "square")]},
             {"objects": [obj("red", "star", "large"), obj("green", "circle", "small")]}]
    assert vocabulary(metas, "color") == ["red", "blue", "green"]
    assert vocabulary(metas, "size") == ["small", "large"]


def test_is_scene_and_require_scenes():
    assert is_scene({"objects": [obj("red", "circle")]})
    assert not is_scene({"objects": []}) and not is_scene({}) and not is_scene({"objects": "x"})
    assert not is_scene({"objects": [{"shape": "circle"}]}) and not is_scene({"objects": [{"color": "red"}]})
    assert not is_scene({"objects": [obj("red", "circle"), "x"]})
    require_scenes([{"objects": [obj("red", "circle")]}], "suite")
    message = (r"^robustness: samples have no per-object attributes \(meta\['objects'\] with shape and color\); "
               r"run this suite on the shapes dataset, e\.g\. --data shapes$")
    for metas in ([], [{"objects": [obj("red", "circle")]}, {}]):
        with pytest.raises(UserError, match=message):
            require_scenes(metas, "robustness")


def test_false_objects_replace_every_known_color_and_size():
    objects = [obj("red", "circle", "small"), obj("blue", "square")]  # the second has no size
    out = false_objects(objects, ["red", "blue"], ["small", "large"], random.Random(0))
    assert out == [obj("blue", "circle", "large"), obj("red", "square")]
    assert objects[0]["color"] == "red"  # the input is not changed
    assert false_objects([obj("red", "circle", "small")], ["red"], ["small"], random.Random(0)) == [
        obj("red", "circle", "small")]  # no other value: kept


def test_robustness_by_hand_on_two_scenes(lookup_encoder):
    """Two scenes; text and images as 2-D vectors so every rank is known."""
    metas = [{"objects": [obj("red", "circle", "small"), obj("blue", "square", "large")], "relations": [[0, 1, "above"]]},
             {"objects": [obj("blue", "circle", "large"), obj("red", "square", "small")], "relations": [[0, 1, "above"]]}]
    table = {
        "a circle above a square": [1.0, 0.0],  # both base captions: each query ranks image 0 first
        "a small red circle above a large blue square": [1.0, 0.0],  # scene 0's true caption, scene 1's false one
        "a large blue circle above a small red square": [0.0, 1.0],  # scene 1's true caption, scene 0's false one
    }
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=metas, encode_text=lookup_encoder(table))
    r = EVALUATORS.get("robustness")()(ctx)
    # base: both queries rank image 0 first: ranks 1 and 2 -> MRR (1 + 1/2) / 2, R@1 1/2
    assert r["base_mrr"] == pytest.approx(0.75) and r["base_recall@1"] == pytest.approx(0.5)
    assert r["true_attr_mrr"] == 1.0 and r["true_attr_delta_mrr"] == pytest.approx(0.25)
    assert r["true_attr_delta_recall@1"] == pytest.approx(0.5)
    assert r.chance["base_mrr"] == pytest.approx((1 + 1 / 2) / 2) and r.chance["true_attr_recall@1"] == 0.5
    # false attributes swap the two captions: each query ranks the other image first
    assert r["false_attr_mrr"] == pytest.approx(0.5) and r["false_attr_delta_recall@1"] == pytest.approx(-0.5)
    assert r.artifacts["n_scenes"] == 2 and r.artifacts["examples"][1]["base"] == "a circle above a square"


def test_robustness_needs_two_scenes(lookup_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2)[:1], meta=[{"objects": [obj("red", "circle")]}],
                                  encode_text=lookup_encoder({}))
    with pytest.raises(UserError, match=r"^robustness: split 'test' has 1 scene; retrieval needs at least 2$"):
        EVALUATORS.get("robustness")()(ctx)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((10.0, 10.0), (10.5, 10.0), (0, 1, "left of")),  # a half-pixel to the right is still to the right
        ((10.0, 10.0), (10.1, 10.5), (0, 1, "above")),  # a half-pixel below
        ((10.0, 10.0), (10.0, 10.0), (0, 1, "right of")),  # coincident centers: the horizontal branch, dx = 0
    ],
)
def test_relation_from_small_center_offsets(a, b, expected):
    meta = {"objects": [obj("red", "circle", cx=a[0], cy=a[1]), obj("blue", "square", cx=b[0], cy=b[1])]}
    assert first_relation(meta) == expected


def test_no_relation_unless_both_objects_have_centers():
    with_center, without = obj("red", "circle", cx=1.0, cy=2.0), obj("blue", "square")
    assert first_relation({"objects": [with_center, without]}) is None
    assert first_relation({"objects": [without, with_center]}) is None


def test_one_object_caption_uses_the_attributes():
    assert scene_caption({"objects": [obj("red", "circle", "small")]}, ("size",)) == "a small circle"


def test_false_captions_are_reproducible_from_the_seed(scenes, ordered_encoder):
    from vlkit.evaluate.robustness import inserted_captions

    assert inserted_captions(scenes, 5) == inserted_captions(scenes, 5)
    assert inserted_captions(scenes, 5)["false_attr"] != inserted_captions(scenes, 6)["false_attr"]
    images = ordered_encoder([scene_caption(s) for s in scenes])
    ctx = EvalContext.from_arrays(image_features=images, meta=scenes, encode_text=ordered_encoder, seed=5)
    examples = EVALUATORS.get("robustness")()(ctx).artifacts["examples"]
    assert [e["false_attr"] for e in examples] == inserted_captions(scenes, 5)["false_attr"][:5]


def test_robustness_without_scene_metadata_names_the_suite(bow_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=[{}, {}], encode_text=bow_encoder)
    with pytest.raises(UserError, match=r"^robustness: samples have no per-object attributes"):
        EVALUATORS.get("robustness")()(ctx)
