"""DualEncoder: bit-exact save/load without pickle, cached fingerprints, frozen parts."""

from __future__ import annotations

import pickle

import pytest
import torch

import vlkit.models as M
from vlkit.errors import UserError

TEXTS = ["a grinning face", "a red heart", "thumbs up"]


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _train_step(model, size: int) -> None:
    """Move every trainable weight away from its init, as training would."""
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    out = model(images(4, size), TEXTS)
    (out["image_features"] @ out["text_features"][:1].T).sum().backward()
    opt.step()


def _no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading a saved model must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("preset,size", [("tiny-clip", 32), ("moji-lit-s", 64)])
def test_save_load_round_trip_is_bit_exact(preset, size, tmp_path, monkeypatch, request):
    model = request.getfixturevalue("tiny") if preset == "tiny-clip" else request.getfixturevalue("moji")
    model = M.load(f"preset:{preset}") if preset == "tiny-clip" else model  # a private copy to train
    if preset == "tiny-clip":
        _train_step(model, size)
    model.eval()
    model.save(tmp_path / "m")
    _no_unpickling(monkeypatch)
    back = M.load(str(tmp_path / "m"))
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    x = images(3, size)
    with torch.no_grad():
        assert torch.equal(back.encode_image(x), model.encode_image(x))
        assert torch.equal(back.encode_text(TEXTS), model.encode_text(TEXTS))
    assert back.fingerprint() == model.fingerprint() and back.config == model.config
    assert back.frozen_parts() == model.frozen_parts()
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "assets"}


def test_fingerprint_is_stable_cached_and_follows_weights():
    a, b = M.load("preset:tiny-clip"), M.load("preset:tiny-clip")
    assert a.fingerprint() == b.fingerprint()  # same config, same seeded init
    text_fp, before = a.fingerprint("text"), a.fingerprint()
    with torch.no_grad():
        a.visual.model.proj.add_(1e-3)  # a tracked in-place change (as an optimizer step)
    assert a.fingerprint() != before
    assert a.fingerprint("text") == text_fp  # other parts keep their key (feature caches stay valid)
    current = a.fingerprint()
    a.visual.model.proj.data.mul_(2)  # .data writes are not tracked: the cached value stays ...
    assert a.fingerprint() == current
    assert a.fingerprint(refresh=True) != current  # ... until asked to refresh


def test_fingerprint_of_a_different_config_differs(tiny_cfg):
    other = dict(tiny_cfg, embed_dim=48)
    m1 = M.build_model({"builder": "openclip", "arch": "a", "model_cfg": tiny_cfg})
    m2 = M.build_model({"builder": "openclip", "arch": "a", "model_cfg": other})
    assert m1.fingerprint() != m2.fingerprint()


def test_freeze_helpers():
    model = M.load("preset:tiny-clip")
    model.freeze("visual")
    assert model.frozen_parts() == ["visual"] and model.is_frozen("image")
    assert not any(p.requires_grad for p in model.visual.parameters())
    model.train()
    assert not model.visual.training and model.text.training
    model.unfreeze("visual")
    assert model.frozen_parts() == [] and model.visual.training
    model.freeze("towers")
    assert model.frozen_parts() == ["visual", "text"]
    assert sum(p.numel() for p in model.trainable_parameters()) == 1  # only logit_scale left
    with pytest.raises(UserError, match="valid: .*visual"):
        model.freeze("vision_tower")


def test_a_damaged_save_directory_is_a_user_error(tmp_path, tiny):
    tiny.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="save the model again"):
        M.load(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        M.load(str(tmp_path / "m"))


def test_weights_that_no_longer_fit_name_the_vlkit_version_that_saved_them(tmp_path, tiny):
    import json

    import vlkit
    from safetensors.torch import load_file, save_file

    tiny.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["vlkit_version"] == vlkit.__version__
    # an older release's parameter names: one key renamed, as a refactor between versions would
    weights = load_file(tmp_path / "m" / "model.safetensors")
    key = next(iter(weights))
    weights["old_" + key] = weights.pop(key)
    save_file(weights, tmp_path / "m" / "model.safetensors")
    meta["vlkit_version"] = "0.0.9"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=rf"saved by vlkit 0\.0\.9 and this is vlkit {vlkit.__version__}"):
        M.load(str(tmp_path / "m"))
    del meta["vlkit_version"]  # saved before the version was recorded
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="saved by an older vlkit"):
        M.load(str(tmp_path / "m"))
