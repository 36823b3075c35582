"""``vlkit export``: the peer library loads the exported checkpoint and computes the same embeddings.

Every model is built here from local files (no network) and its weights are perturbed first, so
a weight left at its init, or mapped to the wrong name, changes the embeddings the peer computes.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import vlkit.models as M
from vlkit.errors import UserError
from vlkit.models.export import export

from hf_tiny import TEXTS, save_tiny_bert, save_tiny_hf


def _perturb(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.fingerprint(refresh=True)
    return model


def _images(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_open_clip_loads_the_export_with_the_same_embeddings(tmp_path):
    import open_clip

    model = _perturb(M.load("preset:tiny-clip"))
    out = export(model, "open_clip", tmp_path / "oc")
    x, texts = _images(3, 32), ["a photo of a cat", "red heart", "a dog"]
    # the local-dir form: config and weights from the folder
    peer, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    # the registered-config form: create_model(name, pretrained=FILE)
    open_clip.add_model_config(out / "tiny-clip.json")
    named = open_clip.create_model("tiny-clip", pretrained=str(out / "open_clip_model.safetensors"))
    fresh = open_clip.create_model("tiny-clip")  # the same architecture, not the exported weights
    with torch.no_grad():
        want_img, want_txt = model.encode_image(x), model.encode_text(texts)
        for oc in (peer.eval(), named.eval()):
            assert torch.allclose(oc.encode_image(x, normalize=True), want_img, atol=1e-5)
            assert torch.allclose(oc.encode_text(tokenizer(texts), normalize=True), want_txt, atol=1e-5)
            assert oc.logit_scale.item() == pytest.approx(model.logit_scale.item())
        assert not torch.allclose(fresh.eval().encode_image(x, normalize=True), want_img, atol=1e-3)
    assert list(preprocess.transforms[-1].mean) == pytest.approx(model.mean)
    assert json.loads((out / "vlkit_export.json").read_text())["fingerprint"] == model.fingerprint()


@pytest.fixture(scope="module", params=["clip", "siglip"])
def hf_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    save_tiny_hf(path, request.param)
    return request.param, _perturb(M.load(f"hf:{path}"))


def test_transformers_loads_the_hf_export_with_the_same_embeddings(hf_model, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    family, model = hf_model
    out = export(model, "hf", tmp_path / "hf")
    peer = AutoModel.from_pretrained(str(out)).eval()
    assert type(peer).__name__ == {"clip": "CLIPModel", "siglip": "SiglipModel"}[family]
    tokens = AutoTokenizer.from_pretrained(str(out))(TEXTS, padding="max_length", max_length=12, return_tensors="pt")
    x = _images(3, 32)
    with torch.no_grad():
        img = F.normalize(peer.get_image_features(pixel_values=x).pooler_output, dim=-1)
        mask = {"attention_mask": tokens["attention_mask"]} if family == "clip" else {}
        txt = F.normalize(peer.get_text_features(input_ids=tokens["input_ids"], **mask).pooler_output, dim=-1)
        assert torch.allclose(img, model.encode_image(x), atol=1e-5)
        assert torch.allclose(txt, model.encode_text(TEXTS), atol=1e-5)
    assert peer.logit_scale.item() == pytest.approx(model.logit_scale.item())
    if family == "siglip":
        assert peer.logit_bias.item() == pytest.approx(model.logit_bias.item())
    # and back: vlkit loads its own export as hf: (a full round trip)
    again = M.load(f"hf:{out}")
    with torch.no_grad():
        assert torch.allclose(again.encode_image(x), model.encode_image(x), atol=1e-6)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def composed(bert_dir, text_head: str = "linear") -> dict:
    return {"builder": "composed", "image_size": 32, "embed_dim": 16,
            "vision": {"type": "cnn", "channels": [8, 16], "convs_per_stage": 1},
            "text": {"type": "hf_encoder", "source": str(bert_dir), "pooling": "mean", "context_length": 12},
            "text_head": {"type": text_head, "bias": True}, "freeze": ["text"]}


def test_hf_export_of_a_composed_model_writes_its_text_tower(bert_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    model = _perturb(M.load(composed(bert_dir)))
    out = export(model, "hf", tmp_path / "hf")
    info = json.loads((out / "vlkit_export.json").read_text())["hf"]
    assert info["image"]["exported"] is False and info["image"]["tower"] == "cnn"
    peer = AutoModel.from_pretrained(str(out / "text")).eval()
    tokens = AutoTokenizer.from_pretrained(str(out / "text"))(TEXTS, padding=True, return_tensors="pt")
    head = load_file(str(out / "text_head.safetensors"))
    with torch.no_grad():
        hidden = peer(**tokens).last_hidden_state  # (B, L, W)
        m = tokens["attention_mask"][..., None].float()
        pooled = (hidden * m).sum(1) / m.sum(1)  # the masked mean vlkit_export.json names
        want = F.normalize(pooled @ head["weight"].T + head["bias"], dim=-1)
        assert torch.allclose(want, model.encode_text(TEXTS), atol=1e-5)


def test_what_cannot_be_exported_is_one_line(bert_dir, tmp_path):
    model = M.load(composed(bert_dir))
    with pytest.raises(UserError, match="cannot be exported --to open_clip.*--to hf takes"):
        export(model, "open_clip", tmp_path / "a")
    with pytest.raises(UserError, match="cannot be exported --to hf"):
        export(M.load("preset:tiny-clip"), "hf", tmp_path / "b")
    with pytest.raises(UserError, match="unknown export target 'onnx'"):
        export(model, "onnx", tmp_path / "c")
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.*"))  # nothing half-written


def test_export_refuses_to_clobber_and_overwrites_only_an_export(tmp_path):
    model = M.load("preset:tiny-clip")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty and holds no earlier vlkit export"):
        export(model, "open_clip", other, overwrite=True)
    assert (other / "mine.txt").read_text() == "keep"
    out = export(model, "open_clip", tmp_path / "oc")
    with pytest.raises(UserError, match="--overwrite"):
        export(model, "open_clip", out)
    export(_perturb(model), "open_clip", out, overwrite=True)
    assert json.loads((out / "vlkit_export.json").read_text())["fingerprint"] == model.fingerprint()


def test_cli_export(tmp_path, capsys):
    from vlkit.cli import main

    assert main(["export", "preset:tiny-clip", "--to", "open_clip", str(tmp_path / "oc")]) == 0
    assert "open_clip.create_model_and_transforms" in capsys.readouterr().out
    assert main(["export", "preset:tiny-clip", "--to", "hf", str(tmp_path / "x")]) == 2
    assert "cannot be exported --to hf" in capsys.readouterr().err
