"""Class descriptions: built-in ones cover every class of every embedded dataset view; a user's
file round-trips; a file that misses classes names them; frozen features go through the cache."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vlkit import data
from vlkit.adapt import descriptions
from vlkit.errors import UserError

VIEWS = ["digits", "shapes:shape", "shapes:color", "shapes:size", "shapes:count",
         "openmoji:concept", "openmoji:subgroup", "openmoji:group"]


@pytest.mark.parametrize("spec", VIEWS)
def test_every_class_of_an_embedded_dataset_has_descriptions(spec):
    ds = data.load(spec, split="all" if spec.startswith("openmoji") else "train")
    table = descriptions.load(ds)
    assert list(table) == list(ds.classnames)
    empty = [c for c, texts in table.items() if not texts or not all(t.strip() for t in texts)]
    assert not empty, f"{spec}: classes without a non-empty description: {empty[:5]}"


def test_each_view_gets_its_own_descriptions():
    # "one" is a digit and a shapes count; "smiling face" an emoji concept and a subgroup
    assert "the number one" in descriptions.load(["zero", "one"])["one"]
    assert "one objects" not in descriptions.load(["zero", "one"])["one"]
    assert "one objects" in descriptions.load(["one", "two", "three"])["one"]
    concept = descriptions.load(["grinning face", "smiling face"])["smiling face"]
    subgroup = descriptions.load(["smiling face", "face with tongue"])["smiling face"]
    assert "an emoji of the smiling face kind" not in concept and "an emoji of the smiling face kind" in subgroup
    assert "grinsendes gesicht emoji" in descriptions.load(["grinning face"])["grinning face"]  # multilingual names


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_user_file_round_trips_in_the_class_order_asked(tmp_path, suffix):
    want = {"cat": ["a small pet that purrs", "a feline"], "dog": ["a loyal pet that barks"], "extra": ["unused"]}
    path = tmp_path / f"desc.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(want))
    else:
        path.write_text("".join(f"{k}:\n" + "".join(f"  - \"{t}\"\n" for t in v) for k, v in want.items()))
    got = descriptions.load(["dog", "cat"], path=path)
    assert list(got) == ["dog", "cat"]
    assert got == {"dog": want["dog"], "cat": want["cat"]}


def test_a_file_missing_classes_names_them_and_the_fix(tmp_path):
    path = tmp_path / "desc.yaml"
    path.write_text("cat: [a feline]\ndog: []\n")
    with pytest.raises(UserError, match=r"2 of 3 classes \('dog', 'bird'\); add them to .*desc.yaml") as err:
        descriptions.load(["cat", "dog", "bird"], path=path)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"built-in descriptions .* \('flux capacitor'\); pass descriptions=PATH"):
        descriptions.load(["flux capacitor", "grinning face"])
    path.write_text("- just a list\n")
    with pytest.raises(UserError, match="must map class names"):
        descriptions.load(["cat"], path=path)
    with pytest.raises(UserError, match="not found"):
        descriptions.load(["cat"], path=tmp_path / "nope.yaml")


def test_slots_cycle_a_short_list_and_cap_at_n_prompts():
    table = {"a": ["a1", "a2", "a3"], "b": ["b1"]}
    assert descriptions.slots(table, 50) == [["a1", "a2", "a3"], ["b1", "b1", "b1"]]
    assert descriptions.slots(table, 2) == [["a1", "a2"], ["b1", "b1"]]


def test_description_features_are_the_frozen_text_features_and_cached(tiny_model):
    from vlkit.adapt.features import _feature_cache

    prompts = [["a red circle", "a blue circle"], ["a red square", "a green square"]]
    feats = descriptions.description_features(tiny_model, prompts)
    with torch.no_grad():
        want = F.normalize(tiny_model.encode_text([t for row in prompts for t in row]).float(), dim=-1)
    assert feats.shape == (2, 2, want.shape[-1])
    assert torch.allclose(feats.reshape(4, -1), want, atol=1e-6)
    cache = _feature_cache()
    hits = cache.hits
    again = descriptions.description_features(tiny_model, prompts)
    assert cache.hits == hits + 1 and torch.equal(again, feats)
