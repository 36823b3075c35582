import random

import pytest
import torch

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.compositional import EmojiProbes, ShapesProbes, probe_credit
from vlkit.evaluate.scenes import scene_caption


def test_swapped_captions_use_the_same_words(make_scene):
    meta = make_scene([("red", "circle", "small"), ("blue", "square", "large")])
    probes = {p[1]: p for p in ShapesProbes().build([meta], random.Random(0))}
    assert set(probes) == {"color_swap", "size_swap", "relation_swap"}
    assert probes["color_swap"][2:] == ("a red circle left of a blue square", ["a blue circle left of a red square"])
    assert probes["relation_swap"][3] == ["a blue square left of a red circle"]
    assert probes["size_swap"][3] == ["a large red circle left of a small blue square"]
    for _, _, true, (distractor,) in probes.values():
        assert sorted(true.split()) == sorted(distractor.split()) and true != distractor


def test_bag_of_words_model_scores_chance(scenes, bow_encoder):
    g = torch.Generator().manual_seed(0)
    ctx = EvalContext.from_arrays(image_features=torch.randn(len(scenes), 128, generator=g), meta=scenes,
                                  encode_text=bow_encoder)
    result = EVALUATORS.get("compositional")()(ctx)
    for key in ("color_swap_acc", "size_swap_acc", "relation_swap_acc", "acc"):
        assert result[key] == pytest.approx(0.5), key
        assert result.chance[key] == 0.5


def test_order_aware_model_that_sees_the_scene_scores_perfectly(scenes, ordered_encoder):
    scenes = [{**s, "objects": [{**o, "size": "small"} for o in s["objects"]]} for s in scenes]  # no size probe
    images = ordered_encoder([scene_caption(s) for s in scenes])  # the image "is" its caption
    ctx = EvalContext.from_arrays(image_features=images, meta=scenes, encode_text=ordered_encoder)
    result = EVALUATORS.get("compositional")()(ctx)
    assert result["color_swap_acc"] == 1.0 and result["relation_swap_acc"] == 1.0
    assert "size_swap_acc" not in result


def test_credit_for_ties_is_the_expected_random_tie_break():
    true = torch.tensor([1.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    distractors = torch.tensor([[0.5, 0.2], [1.0, 0.2], [1.0, 1.0], [0.9, 0.1]], dtype=torch.float64)
    assert probe_credit(true, distractors).tolist() == [1.0, 0.5, pytest.approx(1 / 3), 0.0]


def test_emoji_probes_change_one_modifier():
    metas = [
        {"name": "waving hand: medium skin tone", "subgroup": "hand-fingers-open", "skin_tone": True},
        {"name": "waving hand", "subgroup": "hand-fingers-open", "skin_tone": False},
        {"name": "raised hand", "subgroup": "hand-fingers-open", "skin_tone": False},
        {"name": "grinning face", "subgroup": "face-smiling", "skin_tone": False},
        {"name": "grinning face with big eyes", "subgroup": "face-smiling", "skin_tone": False},
        {"name": "rocket", "subgroup": "transport-air", "skin_tone": False},
    ]
    probes = EmojiProbes().build(metas, random.Random(0))
    by_image = {p[0]: p for p in probes}
    kind, true, (distractor,) = by_image[0][1:]
    assert kind == "skin_tone" and distractor.startswith("waving hand: ") and "skin tone" in distractor
    assert distractor != true
    assert by_image[1][3] == ["raised hand"] and by_image[3][3] == ["grinning face with big eyes"]
    assert 5 not in by_image  # no sibling in its subgroup: no probe


def test_emoji_oracle_scores_perfectly(ordered_encoder):
    metas = [{"name": n, "subgroup": "s", "skin_tone": False} for n in ["red apple", "green apple", "red heart"]]
    images = ordered_encoder([m["name"] for m in metas])
    ctx = EvalContext.from_arrays(image_features=images, meta=metas, encode_text=ordered_encoder)
    result = EVALUATORS.get("compositional")()(ctx)
    assert result["sibling_swap_acc"] == 1.0


def test_metadata_without_scenes_or_emoji_is_a_user_error(bow_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=[{"a": 1}, {"b": 2}], encode_text=bow_encoder)
    with pytest.raises(UserError, match="shapes or openmoji"):
        EVALUATORS.get("compositional")()(ctx)
