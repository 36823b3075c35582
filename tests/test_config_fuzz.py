"""Fuzz: random values of any type for typed config fields (pretrain and adapt) either build or
raise UserError with a one-line message; never another exception, never a traceback."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")  # the dev extra installs it
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vlkit import config  # noqa: E402
from vlkit.adapt.api import AdaptConfig  # noqa: E402
from vlkit.errors import UserError  # noqa: E402
from vlkit.pretrain.config import PretrainConfig  # noqa: E402

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# What a YAML file or a dotted override can hold: scalars of every kind (huge integers, NaN,
# infinities, odd strings), lists and mappings of them.
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**310)
           | st.floats() | st.text(max_size=12) | st.sampled_from(["1e-3", "nan", "-inf", "", "1,2", "[1]", "yes"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)

PRETRAIN_FIELDS = {
    "time_budget_s": (), "init_logit_scale": (), "freeze": (), "heads": (), "cache_frozen": (),
    "scale": ("data",), "max_samples": ("data",), "caption": ("data",), "augment": ("data",),
    "suites": ("eval",), "data_options": ("eval",),
}
ADAPT_FIELDS = ["shots", "seeds", "budget", "views", "aug_scale", "flip", "method", "data", "val_evals",
                "allow_fewer", "options", "feature_batch_size"]


def _builds_or_one_line(cls, data):
    try:
        cfg = config.build(cls, data)
    except UserError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return None
    return cfg


@FUZZ
@given(name=st.sampled_from(sorted(PRETRAIN_FIELDS)), value=VALUES)
def test_pretrain_config_values(name, value):
    data = {name: value}
    for section in reversed(PRETRAIN_FIELDS[name]):
        data = {section: data}
    cfg = _builds_or_one_line(PretrainConfig, data)
    if cfg is not None and name == "scale":  # what builds has the declared type
        assert isinstance(cfg.data.scale, tuple) and all(isinstance(v, float) for v in cfg.data.scale)


@FUZZ
@given(name=st.sampled_from(ADAPT_FIELDS), value=VALUES)
def test_adapt_config_values(name, value):
    cfg = _builds_or_one_line(AdaptConfig, {name: value})
    if cfg is not None and name == "budget":
        assert isinstance(cfg.budget, float)
    if cfg is not None and name in ("views", "val_evals", "feature_batch_size"):
        assert isinstance(getattr(cfg, name), int) and not isinstance(getattr(cfg, name), bool)


@FUZZ
@given(overrides=st.lists(st.text(max_size=20).map(lambda t: f"budget={t}") | st.text(max_size=20), max_size=3))
def test_dotted_overrides(overrides):
    try:
        data = config.apply_overrides({}, overrides)
    except UserError as e:
        assert "\n" not in str(e)
        return
    _builds_or_one_line(AdaptConfig, data)


def test_the_fuzz_sees_both_outcomes():
    """The fuzz above is only worth something if its values both build and fail."""
    assert _builds_or_one_line(AdaptConfig, {"budget": 0.5}).budget == 0.5
    assert _builds_or_one_line(AdaptConfig, {"budget": {"a": 1}}) is None
    assert _builds_or_one_line(AdaptConfig, {"budget": 10**400}) is None  # was an OverflowError
    assert _builds_or_one_line(PretrainConfig, {"freeze": "visual,{"}).freeze == ["visual", "{"]  # was a ParserError
