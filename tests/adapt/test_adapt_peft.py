"""LoRA adapters in PEFT's format: peft loads them onto the Hugging Face model with the same outputs,
and ``vlkit eval MODEL --adapter DIR`` evaluates the adapted model (its numbers, not the base's)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vlkit import adapt, models
from vlkit.adapt.lora_layers import installed
from vlkit.errors import UserError
from vlkit.models.peft_adapter import apply_lora

from hf_tiny import TEXTS, save_tiny_bert, save_tiny_hf

CLASSES = ["cat", "dog", "red heart"]


def _trained_lora(model, **options):
    """A LoRA method whose B factors are random (as after training; at init B = 0 changes nothing)."""
    method = adapt.build_method("lora", model, CLASSES, ["a photo of a {}"], {"rank": 2, **options})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in method.named_parameters():
            if ".B." in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return method.eval()


def _images(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.filterwarnings("ignore:Found missing adapter keys")  # SigLIP's pooling MHA: peft's out_proj LoRA (zero)
def test_peft_loads_a_vlkit_lora_onto_the_hf_model_with_the_same_outputs(family, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install vlkit[peft])")
    from transformers import AutoModel

    save_tiny_hf(tmp_path / "base", family)
    model = models.load(f"hf:{tmp_path / 'base'}")
    lora = _trained_lora(model, rank_scaling="sqrt")
    out = lora.save(tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["r"] == 2 and config["lora_alpha"] == pytest.approx(1.0)
    assert json.loads((out / "vlkit_adapter.json").read_text())["base"] == "hf"
    peft_model = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(str(tmp_path / "base")), str(out)).eval()
    base = AutoModel.from_pretrained(str(tmp_path / "base")).eval()
    x, tokens = _images(), model.tokenize(TEXTS)
    mask = {"attention_mask": tokens["attention_mask"]} if family == "clip" else {}
    with torch.no_grad(), installed(lora.targets):
        want_img, want_txt = model.encode_image(x), model.encode_text(TEXTS)
    with torch.no_grad():
        img = F.normalize(peft_model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        txt = F.normalize(peft_model.get_text_features(input_ids=tokens["input_ids"], **mask).pooler_output, dim=-1)
        plain = F.normalize(base.get_image_features(pixel_values=x).pooler_output, dim=-1)
    assert torch.allclose(img, want_img, atol=1e-5) and torch.allclose(txt, want_txt, atol=1e-5)
    assert not torch.allclose(plain, want_img, atol=1e-3)  # the adapter changes the outputs


def test_peft_loads_a_text_tower_lora_onto_the_sentence_encoder(tmp_path):
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install vlkit[peft])")
    from transformers import AutoModel

    bert = save_tiny_bert(tmp_path / "bert")
    model = models.load({"builder": "composed", "image_size": 32, "embed_dim": 16,
                         "vision": {"type": "cnn", "channels": [8], "convs_per_stage": 1},
                         "text": {"type": "hf_encoder", "source": str(bert), "context_length": 12}})
    lora = _trained_lora(model, towers=["text"], rank_scaling="linear", alpha=4.0)
    out = lora.save(tmp_path / "adapter")
    assert json.loads((out / "vlkit_adapter.json").read_text())["base"] == "hf_text"
    peft_model = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(str(bert)), str(out)).eval()
    tokens = model.tokenize(TEXTS)
    with torch.no_grad(), installed(lora.targets):
        want = model.encode_text_pooled(tokens)  # masked mean of the adapted encoder
    with torch.no_grad():
        hidden = peft_model(**tokens).last_hidden_state
    m = tokens["attention_mask"][..., None].float()
    assert torch.allclose((hidden * m).sum(1) / m.sum(1), want, atol=1e-5)


def test_an_adapter_peft_itself_wrote_merges_into_the_vlkit_model(tmp_path):
    """Coming from peft: a LoRA trained on the transformers CLIPModel, evaluated in vlkit."""
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install vlkit[peft])")
    from transformers import AutoModel

    save_tiny_hf(tmp_path / "base", "clip")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"], init_lora_weights=False)
    peft_model = peft.get_peft_model(AutoModel.from_pretrained(str(tmp_path / "base")), config).eval()
    peft_model.save_pretrained(str(tmp_path / "theirs"))  # B random (init_lora_weights=False): not a no-op
    assert not (tmp_path / "theirs" / "vlkit_adapter.json").exists()
    model = apply_lora(models.load(f"hf:{tmp_path / 'base'}"), tmp_path / "theirs")
    x, tokens = _images(), model.tokenize(TEXTS)
    with torch.no_grad():
        img = F.normalize(peft_model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        txt = F.normalize(peft_model.get_text_features(**tokens).pooler_output, dim=-1)
        assert torch.allclose(model.encode_image(x), img, atol=1e-5)
        assert torch.allclose(model.encode_text(TEXTS), txt, atol=1e-5)
        plain = models.load(f"hf:{tmp_path / 'base'}")
        assert not torch.allclose(plain.encode_image(x), img, atol=1e-3)


def test_a_fused_projection_lora_merges_to_the_methods_own_merge(tiny_model, tmp_path):
    """tiny-clip's attention is nn.MultiheadAttention (fused q/k/v): stored as one rank-3r LoRA."""
    lora = _trained_lora(tiny_model, projections=["q", "v"])
    out = lora.save(tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and json.loads((out / "vlkit_adapter.json").read_text())["base"] == "vlkit"
    merged = apply_lora(models.load("preset:tiny-clip"), out)
    want = lora.merge().state_dict()
    got = merged.state_dict()
    assert set(got) == set(want)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert not torch.allclose(got["visual.model.transformer.resblocks.0.attn.in_proj_weight"],
                              tiny_model.state_dict()["visual.model.transformer.resblocks.0.attn.in_proj_weight"])


def test_eval_with_an_adapter_reports_the_adapted_models_numbers(tiny_model, tmp_path, capsys):
    from vlkit.cli import main
    from vlkit.evaluate import run

    lora = _trained_lora(tiny_model)
    out = lora.save(tmp_path / "adapter")
    suites, data = "zeroshot,calibration", "digits"
    assert main(["eval", "preset:tiny-clip", "--adapter", str(out), "--data", data, "--suite", suites,
                 "--out", str(tmp_path / "eval")]) == 0
    assert "merged the LoRA adapter" in capsys.readouterr().out
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    # the adapted model: the base with the updates merged (equal to LoRA's own merge, tested above;
    # merged here the same way, since a random tiny model's near-tied logits move with rounding)
    adapted = run(apply_lora(models.load("preset:tiny-clip"), out), data, suites, cache=False)["metrics"]
    base = run(models.load("preset:tiny-clip"), data, suites, cache=False)["metrics"]
    assert got.keys() == adapted.keys()
    assert all(got[k] == pytest.approx(adapted[k], rel=1e-6) for k in got if got[k] is not None)
    assert got["calibration/nll"] != pytest.approx(base["calibration/nll"], rel=1e-3)


def test_adapter_errors_are_one_line(tiny_model, tmp_path):
    coop = adapt.build_method("coop", tiny_model, CLASSES, ["a photo of a {}"])
    coop.save(tmp_path / "coop")
    with pytest.raises(UserError, match="holds a vlkit 'coop' adapter.*--adapter takes LoRA adapters"):
        apply_lora(models.load("preset:tiny-clip"), tmp_path / "coop")
    with pytest.raises(UserError, match="PEFT adapter config not found"):
        apply_lora(models.load("preset:tiny-clip"), tmp_path / "nothing")
    bert_model = {"builder": "composed", "image_size": 32, "embed_dim": 16,
                  "vision": {"type": "cnn", "channels": [8], "convs_per_stage": 1},
                  "text": {"type": "openclip_text", "cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                                                            "heads": 2, "layers": 1}}}
    lora = _trained_lora(tiny_model).save(tmp_path / "lora")
    with pytest.raises(UserError, match="apply it to the model it was trained on"), pytest.warns(UserWarning):
        apply_lora(models.load(bert_model), lora)


def test_export_with_an_adapter_writes_the_adapted_model(tiny_model, tmp_path):
    import open_clip

    from vlkit.models.export import export

    adapter = _trained_lora(tiny_model).save(tmp_path / "adapter")
    out = export("preset:tiny-clip", "open_clip", tmp_path / "oc", adapter=adapter)
    peer = open_clip.create_model_and_transforms(f"local-dir:{out}")[0].eval()
    adapted = apply_lora(models.load("preset:tiny-clip"), adapter)
    x = _images()
    with torch.no_grad():
        assert torch.allclose(peer.encode_image(x, normalize=True), adapted.encode_image(x), atol=1e-5)
        assert not torch.allclose(peer.encode_image(x, normalize=True), tiny_model.encode_image(x), atol=1e-3)


def test_vlkit_adapt_lora_leaves_an_adapter_that_eval_merges(tiny_model, tmp_path):
    out = adapt.run("lora", "digits", tiny_model, shots=[1], seeds=[1], views=1, budget=0.01, device="cpu",
                    out=str(tmp_path / "run"))
    folder = tmp_path / "run" / "lora" / "1shot" / "seed1" / "adapter"
    assert out["paths"]["json"].is_file()
    assert {"method.json", "adapter.safetensors", "adapter_config.json", "adapter_model.safetensors",
            "vlkit_adapter.json"} <= {p.name for p in folder.iterdir()}
    lora = adapt.load_method(folder, tiny_model).eval()
    merged = apply_lora(models.load("preset:tiny-clip"), folder)
    batch = {"images": _images()}
    with torch.no_grad():
        assert torch.allclose(lora.merged_logits(merged, batch), lora.logits(batch), atol=1e-4)
