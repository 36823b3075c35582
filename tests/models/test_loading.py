"""load(spec): presets, config dicts and files, describe; unknown names list the valid ones;
specs that need the network fail fast with OfflineError instead of hanging."""

from __future__ import annotations

import time

import pytest
import torch
import yaml

import vlkit.models as M
from vlkit.errors import OfflineError, UserError
from vlkit.models import network

REQUIRED = {"moji-lit-s", "tiny-clip", "vit-b-32-laion2b", "rn50-openai", "vit-b-16-openai", "siglip-b16-224"}


def test_presets_are_listed_with_descriptions():
    rows = {r["name"]: r for r in M.list_presets()}
    assert REQUIRED <= set(rows)
    assert all(r["description"] for r in rows.values())
    assert rows["vit-b-32-laion2b"]["spec"] == "openclip:ViT-B-32@laion2b_s34b_b79k" and rows["vit-b-32-laion2b"]["needs_network"]
    assert not rows["moji-lit-s"]["needs_network"]


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown model preset 'moji-lit-x'.*valid: .*moji-lit-s.*tiny-clip"):
        M.load("preset:moji-lit-x")
    with pytest.raises(UserError, match="preset:NAME .*moji-lit-s"):
        M.load("no-such-thing")


def test_describe_counts_parts_without_downloading():
    info = M.describe("preset:moji-lit-s")
    text, visual = info["parts"]["text"], info["parts"]["visual"]
    assert text["frozen"] and text["trainable"] == 0 and text["width"] == 384 and text["pooling"] == "masked mean"
    assert not visual["frozen"] and visual["width"] == 256 and visual["layers"] == 1 and visual["supports_prompts"]
    assert info["embed_dim"] == 256 and info["image_size"] == 64
    assert info["params"] == sum(p["params"] for p in info["parts"].values())
    rn50 = M.describe("preset:rn50-openai")  # architecture only: no weights fetched
    assert rn50["parts"]["visual"]["supports_prompts"] is False and rn50["embed_dim"] == 1024


def test_config_dict_and_yaml_file_specs(tmp_path):
    cfg = {"image_size": 32, "embed_dim": 16,
           "vision": {"type": "convvit", "stem_channels": [8, 16], "width": 32, "depth": 1, "heads": 2, "norm": "group"},
           "text": {"type": "openclip_text", "cfg": {"width": 32, "heads": 2, "layers": 1, "context_length": 12}},
           "image_head": {"type": "mlp", "hidden": 24}, "freeze": ["image_proj"]}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"model": cfg}))
    a, b = M.load(cfg), M.load(str(tmp_path / "model.yaml"))
    assert a.fingerprint() == b.fingerprint() and a.frozen_parts() == ["image_proj"]
    assert a.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    assert a.visual.grid == 8  # 32 px / 2**2 stride-2 convs


def test_bad_composed_configs_name_the_valid_choices():
    with pytest.raises(UserError, match="valid: .*convvit"):
        M.load({"vision": {"type": "vit-huge"}, "text": {"type": "openclip_text"}})
    with pytest.raises(UserError, match="vision.depht.*valid keys"):
        M.load({"vision": {"type": "convvit", "depht": 3}, "text": {"type": "openclip_text"}})
    # open_clip's own tower configs are checked too, not left to a TypeError inside open_clip
    with pytest.raises(UserError, match="unknown openclip_vit cfg key 'widht'.*valid keys: .*width"):
        M.load({"vision": {"type": "openclip_vit", "cfg": {"widht": 64}}, "text": {"type": "openclip_text"}})
    with pytest.raises(UserError, match="unknown openclip_text cfg key 'layer'.*valid keys: .*layers"):
        M.load({"vision": {"type": "convvit"}, "text": {"type": "openclip_text", "cfg": {"layer": 2}}})


def test_timm_tower_in_a_composed_model(tmp_path):
    cfg = {"image_size": 32, "embed_dim": 16, "vision": {"type": "timm", "name": "test_resnet"},
           "text": {"type": "openclip_text", "cfg": {"width": 32, "heads": 2, "layers": 1, "context_length": 12}}}
    model = M.load(cfg)
    model.save(tmp_path / "m")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(M.load(str(tmp_path / "m")).encode_image(x), model.encode_image(x))


def test_network_specs_fail_fast_offline(monkeypatch):
    monkeypatch.setattr(network, "reachable", lambda host, *a, **k: False)
    monkeypatch.setattr(network, "hf_cached_file", lambda *a, **k: None)
    start = time.monotonic()
    with pytest.raises(OfflineError, match=r"needs the network.*openclip:ViT-B-32@/path/to/checkpoint.pt"):
        M.load("preset:vit-b-32-laion2b")
    with pytest.raises(OfflineError, match="hf:/path/to/dir"):
        M.load("hf:google/siglip-base-patch16-224")
    assert time.monotonic() - start < 15


def test_hf_hub_offline_is_honoured(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(network, "reachable", lambda *a, **k: pytest.fail("must not probe when HF_HUB_OFFLINE=1"))
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        M.load("hf:openai/clip-vit-base-patch32")


def test_the_probe_gives_up_within_its_timeout(monkeypatch):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(30))  # a host that never answers
    start = time.monotonic()
    assert network.reachable("vlkit-hangs.example", timeout=1.0) is False
    assert time.monotonic() - start < 3
    start = time.monotonic()
    assert network.reachable("vlkit-hangs.example", timeout=1.0) is False  # remembered: no second wait
    assert time.monotonic() - start < 0.1


def test_real_offline_failure_here():
    """End to end with the real probe, where the hub is unreachable (as on this project's machines)."""
    if network.reachable(network.hf_host()):
        pytest.skip("the Hugging Face hub is reachable from here")
    start = time.monotonic()
    with pytest.raises(OfflineError):
        M.load("openclip:ViT-B-32@laion2b_s34b_b79k")
    assert time.monotonic() - start < 15
