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


def test_shapes_probes_by_hand(make_scene):
    meta = make_scene([("red", "circle", "small"), ("blue", "square", "large")], rel="above")
    probes = ShapesProbes().build([meta, make_scene([("red", "circle", "small")])], random.Random(0))
    assert probes == [
        (0, "color_swap", "a red circle above a blue square", ["a blue circle above a red square"]),
        (0, "size_swap", "a small red circle above a large blue square", ["a large red circle above a small blue square"]),
        (0, "relation_swap", "a red circle above a blue square", ["a blue square above a red circle"]),
    ]  # the one-object scene gets none
    same_color = make_scene([("red", "circle", "small"), ("red", "square", "small")])
    assert [p[1] for p in ShapesProbes().build([same_color], random.Random(0))] == ["relation_swap"]


def test_credit_tolerance_and_margin():
    true = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    distractors = torch.tensor([[1.0 - 5e-7, 0.0], [1.0 + 5e-7, 1.0 - 2e-6], [1.0 - 2e-6, 0.0]], dtype=torch.float64)
    # within 1e-6 of the true score counts as a tie (either side); 2e-6 below is a win
    assert probe_credit(true, distractors).tolist() == [0.5, 0.5, 1.0]
    assert probe_credit(true, distractors, tie_tol=1e-7).tolist() == [1.0, 0.0, 1.0]
    assert probe_credit(true, distractors, tie_tol=1e-5).tolist() == [pytest.approx(1 / 2), pytest.approx(1 / 3), 0.5]


def test_compositional_evaluator_by_hand(make_scene, lookup_encoder):
    """Two scenes; the model reads colors (scene 0 right, scene 1 wrong) and ties on relations."""
    metas = [make_scene([("red", "circle", "small"), ("blue", "square", "small")], rel="above"),
             make_scene([("green", "star", "small"), ("blue", "square", "small")], rel="above")]
    t = "an image of {}."
    table = {
        t.format("a red circle above a blue square"): [1.0, 0.0],
        t.format("a blue circle above a red square"): [0.0, 1.0],
        t.format("a blue square above a red circle"): [1.0, 0.0],  # relation swap of scene 0: a tie
        t.format("a green star above a blue square"): [0.0, 1.0],
        t.format("a blue star above a green square"): [1.0, 0.0],
        t.format("a blue square above a green star"): [0.0, 1.0],  # relation swap of scene 1: a tie
    }
    ctx = EvalContext.from_arrays(image_features=torch.eye(2)[[0, 0]], meta=metas, encode_text=lookup_encoder(table))
    result = EVALUATORS.get("compositional").from_options({"template": t})(ctx)
    assert result["color_swap_acc"] == 0.5  # scene 0: 1 vs 0, won; scene 1: 0 vs 1, lost
    assert result["relation_swap_acc"] == 0.5  # two ties
    assert result["acc"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert result.chance == {"color_swap_acc": 0.5, "relation_swap_acc": 0.5, "acc": 0.5}
    assert result.artifacts["n_probes"] == {"color_swap": 2, "relation_swap": 2}
    first = result.artifacts["examples"][0]
    assert first == {"image": 0, "kind": "color_swap", "true": "a red circle above a blue square",
                     "distractors": ["a blue circle above a red square"], "credit": 1.0}


def test_no_probe_is_a_user_error(make_scene, lookup_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=[make_scene([("red", "circle", "small")])] * 2,
                                  encode_text=lookup_encoder({}))
    with pytest.raises(UserError, match=r"^compositional: no probe could be built from split 'test'; it needs scenes"):
        EVALUATORS.get("compositional")()(ctx)


def test_probe_set_can_be_named_and_unknown_metadata_names_the_fix(bow_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=[{"a": 1}, {"b": 2}], encode_text=bow_encoder)
    with pytest.raises(UserError, match=r"^compositional: the samples' metadata has neither shapes objects nor emoji "
                                        r"names; run it on shapes or openmoji, or set compositional\.probes$"):
        EVALUATORS.get("compositional")()(ctx)
    emoji = [{"name": "red apple", "subgroup": "s"}, {"name": "green apple", "subgroup": "s"}]
    named = EVALUATORS.get("compositional").from_options({"probes": "openmoji"})(
        EvalContext.from_arrays(image_features=torch.ones(2, 128), meta=emoji, encode_text=bow_encoder))
    assert set(named) == {"sibling_swap_acc", "acc"}


def test_closest_sibling_by_shared_words():
    names = ["grinning face", "grinning face with big eyes", "grinning squinting face", "rocket", "face: savoring food"]
    assert EmojiProbes._closest("grinning face with smiling eyes", names, random.Random(0)) == "grinning face with big eyes"
    assert EmojiProbes._closest("rocket", names, random.Random(0)) is None  # only itself shares a word
    assert EmojiProbes._closest("Face", ["FACE: happy", "sad face"], random.Random(0)) in {"FACE: happy", "sad face"}
    picks = {EmojiProbes._closest("red x", ["red a", "red b"], random.Random(s)) for s in range(20)}
    assert picks == {"red a", "red b"}  # ties broken by the rng


def test_a_scene_without_a_probe_does_not_stop_the_next(make_scene):
    one = make_scene([("red", "circle", "small")])
    same_color = make_scene([("red", "circle", "small"), ("red", "square", "large")], rel="above")
    kinds = [(p[0], p[1]) for p in ShapesProbes().build([one, same_color], random.Random(0))]
    assert kinds == [(1, "size_swap"), (1, "relation_swap")]  # an equal color skips only the color swap


def test_emoji_probe_set_needs_names_and_subgroups(bow_encoder):
    assert not EmojiProbes.applies([{"name": "rocket"}]) and not EmojiProbes.applies([{"subgroup": "s"}])
    assert EmojiProbes.applies([{"name": "rocket", "subgroup": "s"}])


def test_skin_tone_probe_replaces_the_first_tone_with_another():
    meta = {"name": "people holding hands: light skin tone, dark skin tone", "subgroup": "family", "skin_tone": True}
    for seed in range(10):
        (probe,) = EmojiProbes().build([meta], random.Random(seed))
        idx, kind, true, (distractor,) = probe
        assert (idx, kind, true) == (0, "skin_tone", meta["name"])
        head, tail = distractor.split(": ", 1)
        assert head == "people holding hands" and tail.endswith(" skin tone, dark skin tone")
        assert tail.split(" skin tone")[0] in {"medium-light", "medium", "medium-dark", "dark"}  # never light


def test_skin_tone_flag_decides_the_probe_kind():
    metas = [
        {"name": "waving hand: medium skin tone", "subgroup": "hand", "skin_tone": False},  # tone in the name only
        {"name": "waving hand", "subgroup": "hand", "skin_tone": False},
        {"name": "raised hand", "subgroup": "hand", "skin_tone": True},  # flagged, but no tone in its name
    ]
    kinds = {p[0]: p[1] for p in EmojiProbes().build(metas, random.Random(0))}
    assert kinds == {0: "sibling_swap", 1: "sibling_swap"}


def test_closest_reads_colons_as_spaces_and_breaks_ties_at_random():
    assert EmojiProbes._closest("smile: a", ["smile b", "c: d"], random.Random(0)) == "smile b"
    assert EmojiProbes._closest("smile: a", ["c: d"], random.Random(0)) is None
    picks = {EmojiProbes._closest("smile: a", ["smile b", "smile xx"], random.Random(s)) for s in range(20)}
    assert picks == {"smile b", "smile xx"}


def test_credit_at_exactly_the_tolerance_is_a_tie():
    true, distractors = torch.tensor([1.0], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)
    assert probe_credit(true, distractors, tie_tol=0.5).tolist() == [0.5]


def test_evaluator_passes_tie_tol_and_seed_and_counts_probes(scenes, ordered_encoder):
    first = scenes[0]["objects"]
    scenes[0] = {**scenes[0], "objects": [first[0], {**first[1], "color": first[0]["color"]}]}  # no color swap
    images = ordered_encoder([scene_caption(s) for s in scenes])
    ctx = EvalContext.from_arrays(image_features=images, meta=scenes, encode_text=ordered_encoder, seed=4)
    result = EVALUATORS.get("compositional").from_options({"tie_tol": 10.0})(ctx)
    assert result["acc"] == 0.5  # every probe is a tie at this tolerance
    probes = ShapesProbes().build(scenes, random.Random(4))
    counts = {k: sum(p[1] == k for p in probes) for k in {p[1] for p in probes}}
    assert result.artifacts["n_probes"] == counts and len(set(counts.values())) > 1
    assert len(result.artifacts["examples"]) == 8 < len(probes)
    emoji = [{"name": "waving hand: medium skin tone", "subgroup": "hand", "skin_tone": True},
             {"name": "raised hand", "subgroup": "hand", "skin_tone": False},
             {"name": "waving hand", "subgroup": "hand", "skin_tone": False}]
    expected = EmojiProbes().build(emoji, random.Random(4))[0][3]
    for _ in range(5):  # an unseeded rng would match 5 times with probability 1/4^5
        ectx = EvalContext.from_arrays(image_features=ordered_encoder([m["name"] for m in emoji]), meta=emoji,
                                       encode_text=ordered_encoder, seed=4)
        examples = EVALUATORS.get("compositional")()(ectx).artifacts["examples"]
        assert examples[0]["distractors"] == expected
