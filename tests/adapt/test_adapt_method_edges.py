"""Method details the mutation run (docs/testing.md) found untested, each checked by hand on the
tiny model: shapes and constants each method's docstring states, and the branches the formula
tests do not reach."""

from __future__ import annotations

import pytest
import torch

from test_adapt_formulas import NAMES, TEMPLATES, linears
from vlkit import adapt


@pytest.mark.parametrize("reduction", [4, 2])
def test_clip_adapter_bottleneck_is_d_over_reduction_without_bias(tiny_model, reduction):
    # CLIP-Adapter (arXiv 2110.04544): W1 D -> D / reduction, W2 back to D, no bias, ReLU after each
    d = tiny_model.embed_dim
    method = adapt.build_method("clip_adapter", tiny_model, NAMES, TEMPLATES, {"reduction": reduction})
    first, second = linears(method.adapter)
    assert first.weight.shape == (d // reduction, d) and second.weight.shape == (d, d // reduction)
    assert first.bias is None and second.bias is None
    assert [type(m).__name__ for m in method.adapter] == ["Linear", "ReLU", "Linear", "ReLU"]
