import pytest
import torch
import torch.nn.functional as F

from vlkit.errors import UserError
from vlkit.evaluate import EVALUATORS, EvalContext
from vlkit.evaluate.reward import goal_degree, spearman, vlmrm_reward
from vlkit.evaluate.robustness import inserted_captions

# -- robustness -------------------------------------------------------------------------------------


def test_inserted_captions(scenes):
    caps = inserted_captions(scenes, seed=0)
    objs = scenes[0]["objects"]
    assert caps["base"][0] == f"a {objs[0]['shape']} above a {objs[1]['shape']}"
    assert caps["true_attr"][0] == f"a small {objs[0]['color']} {objs[0]['shape']} above a large {objs[1]['color']} {objs[1]['shape']}"
    false = caps["false_attr"][0].split()
    assert false[1] == "large" and false[2] != objs[0]["color"] and false[2] in {"red", "blue", "green", "yellow"}


def test_true_attributes_help_a_model_that_reads_them_false_ones_hurt(scenes, ordered_encoder):
    images = ordered_encoder(inserted_captions(scenes, seed=0)["true_attr"])  # images "are" full descriptions
    ctx = EvalContext.from_arrays(image_features=images, meta=scenes, encode_text=ordered_encoder)
    r = EVALUATORS.get("robustness")()(ctx)
    assert r["true_attr_mrr"] == 1.0 and r["true_attr_recall@1"] == 1.0
    assert r["base_mrr"] < 1.0
    assert r["false_attr_mrr"] < r["true_attr_mrr"]
    assert r["true_attr_delta_mrr"] == pytest.approx(r["true_attr_mrr"] - r["base_mrr"])
    assert r["false_attr_delta_recall@1"] == pytest.approx(r["false_attr_recall@1"] - r["base_recall@1"])
    assert r.chance["base_recall@1"] == pytest.approx(1 / len(scenes))


def test_robustness_needs_scene_metadata(bow_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=[{}, {}], encode_text=bow_encoder)
    with pytest.raises(UserError, match="shapes"):
        EVALUATORS.get("robustness")()(ctx)


# -- reward -----------------------------------------------------------------------------------------


def test_vlmrm_reward_by_hand():
    x = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    g, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert vlmrm_reward(x, g, b, 0.0).item() == pytest.approx(0.6)  # plain cosine x.g
    # alpha 1: P = d d^T / 2 with d = (1, -1); (x - g) P = (-0.6, 0.6); R = 1 - 0.36
    assert vlmrm_reward(x, g, b, 1.0).item() == pytest.approx(0.64)


def test_spearman_by_hand():
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)


def test_goal_degree(make_scene):
    meta = make_scene([("red", "square", "small"), ("blue", "circle", "large")])
    assert goal_degree(meta, {"color": "red", "shape": "circle"}) == 1
    assert goal_degree(make_scene([("red", "circle", "small"), ("x", "y", "z")]), {"color": "red", "shape": "circle"}) == 2


def goal_world(make_scene, reverse=False):
    """Scenes at goal degree 0, 1, 2 whose image features drift from baseline to goal text."""
    objs = [("blue", "square", "small"), ("red", "square", "small"), ("red", "circle", "small")]
    metas = [make_scene([objs[k % 3], ("green", "star", "large")]) for k in range(30)]
    goal_vec, base_vec = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.0, 1, 0, 0])
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([(k % 3) / 2 for k in range(30)])
    c = 1 - c if reverse else c
    images = c[:, None] * goal_vec + (1 - c[:, None]) * base_vec + 0.05 * torch.randn(30, 4, generator=g)
    table = {"a red circle": goal_vec, "a picture of a red circle": goal_vec,
             "a shape": base_vec, "a picture of shapes": base_vec}
    return EvalContext.from_arrays(image_features=F.normalize(images, dim=-1), meta=metas,
                                   encode_text=lambda ts: torch.stack([table[t] for t in ts]))


def test_reward_orders_scenes_by_goal_degree(make_scene):
    options = {"goal": {"color": "red", "shape": "circle"}}
    result = EVALUATORS.get("reward").from_options(options)(goal_world(make_scene))
    assert set(result) == {f"spearman_alpha_{a}" for a in ("0", "0.25", "0.5", "0.75", "1")}
    assert all(v > 0.8 for v in result.values())
    reverse = EVALUATORS.get("reward").from_options(options)(goal_world(make_scene, reverse=True))
    assert all(v < -0.8 for v in reverse.values())
    assert result.artifacts["degree_counts"] == {0: 10, 1: 10, 2: 10}


def test_goal_not_in_data_is_a_user_error(make_scene):
    with pytest.raises(UserError, match="never occurs"):
        EVALUATORS.get("reward").from_options({"goal": {"color": "teal"}})(goal_world(make_scene))


def test_vlmrm_reward_half_projection_by_hand():
    # alpha 0.5: P = 0.5 * d d^T / |d|^2 + 0.5 I, d = g - b = (1, -1); x - g = (-0.4, 0.8)
    # d d^T / 2 = [[0.5, -0.5], [-0.5, 0.5]]; (x - g) P = 0.5 * (-0.6, 0.6) + 0.5 * (-0.4, 0.8) = (-0.5, 0.7)
    x = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    g, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert vlmrm_reward(x, g, b, 0.5).item() == pytest.approx(1 - 0.5 * (0.25 + 0.49))


def test_reward_metrics_and_artifacts_by_hand(make_scene):
    options = {"goal": {"color": "red", "shape": "circle"}, "alphas": [0.0, 0.5]}
    ctx = goal_world(make_scene)
    result = EVALUATORS.get("reward").from_options(options)(ctx)
    images = ctx.image_features("test").double()
    g, b = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0, 0], dtype=torch.float64)
    degree = torch.tensor([k % 3 for k in range(30)], dtype=torch.float64)
    for alpha in (0.0, 0.5):
        reward = vlmrm_reward(images, g, b, alpha)
        assert result[f"spearman_alpha_{alpha:g}"] == pytest.approx(spearman(reward, degree))
        by_level = result.artifacts["mean_reward_by_degree"][f"{alpha:g}"]
        assert by_level == pytest.approx({lv: reward[degree == lv].mean().item() for lv in (0, 1, 2)})
    assert result.artifacts["goal"] == {"color": "red", "shape": "circle"}
    assert result.artifacts["goal_prompts"] == ["a red circle", "a picture of a red circle"]
    assert result.artifacts["baseline_prompts"] == ["a shape", "a picture of shapes"]
    assert result.chance == {"spearman_alpha_0": 0.0, "spearman_alpha_0.5": 0.0}


def test_default_goal_is_the_most_common_color_and_shape(make_scene):
    from vlkit.evaluate.reward import default_goal

    metas = [make_scene([("red", "square", "small"), ("blue", "square", "large")]),
             make_scene([("red", "circle", "small"), ("green", "star", "large")])]
    assert default_goal(metas) == {"color": "red", "shape": "square"}


@pytest.mark.parametrize("alphas", [[-0.1], [0.5, 1.5]])
def test_alphas_outside_unit_interval_are_a_user_error(make_scene, alphas):
    options = {"goal": {"color": "red", "shape": "circle"}, "alphas": alphas}
    with pytest.raises(UserError, match=r"^reward: alphas .* must lie in \[0, 1\]; e\.g\. alphas=\[0,0\.5,1\]$"):
        EVALUATORS.get("reward").from_options(options)(goal_world(make_scene))


def test_goal_error_lists_the_values_seen(make_scene):
    with pytest.raises(UserError, match=r"^reward: goal color='teal' never occurs in the split; seen: blue, green, red$"):
        EVALUATORS.get("reward").from_options({"goal": {"color": "teal"}})(goal_world(make_scene))


def test_vlmrm_reward_with_a_short_direction_by_hand():
    # |d|^2 = 0.4 < 1: d = g - b = (0.2, -0.6); (x - g) = (-0.4, 0.8); (x - g).d = -0.56
    # alpha 1: (x - g) P = d * (-0.56 / 0.4) = (-0.28, 0.84); |.|^2 = 0.784; R = 1 - 0.392
    x = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    g, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.8, 0.6], dtype=torch.float64)
    assert vlmrm_reward(x, g, b, 1.0).item() == pytest.approx(0.608)


def test_reward_without_scene_metadata_names_the_suite(bow_encoder):
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=[{}, {}], encode_text=bow_encoder)
    with pytest.raises(UserError, match=r"^reward: samples have no per-object attributes"):
        EVALUATORS.get("reward")()(ctx)


def test_goal_prompts_put_size_before_color_and_shape(make_scene):
    metas = [make_scene([("red", "circle", "small"), ("blue", "square", "large")]),
             make_scene([("blue", "circle", "large"), ("red", "square", "small")])]
    asked = []

    def encode(texts):
        asked.extend(texts)
        return torch.stack([torch.tensor([1.0, 0.0]) if "circle" in t else torch.tensor([0.0, 1.0]) for t in texts])

    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=metas, encode_text=encode)
    goal = {"shape": "circle", "color": "red", "size": "small"}
    result = EVALUATORS.get("reward").from_options({"goal": goal, "alphas": [0.0]})(ctx)
    assert result.artifacts["goal_prompts"] == ["a small red circle", "a picture of a small red circle"]
    assert asked[:2] == ["a small red circle", "a picture of a small red circle"]
    assert result.artifacts["degree_counts"] == {2: 1, 3: 1}  # scene 0: the small red circle; scene 1: small red square


def test_goal_attribute_no_scene_has_says_none_seen(bow_encoder):
    metas = [{"objects": [{"color": "red", "shape": "circle"}]}, {"objects": [{"color": "blue", "shape": "star"}]}]
    ctx = EvalContext.from_arrays(image_features=torch.eye(2), meta=metas, encode_text=bow_encoder)
    with pytest.raises(UserError, match=r"^reward: goal size='small' never occurs in the split; seen: none$"):
        EVALUATORS.get("reward").from_options({"goal": {"size": "small"}})(ctx)
