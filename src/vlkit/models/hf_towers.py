"""Hugging Face CLIP and SigLIP dual encoders: ``hf:NAME_OR_DIR``.

``hf:`` reads the directory's ``config.json`` (``model_type`` clip or siglip), loads
``CLIPModel`` / ``SiglipModel`` in float32 and splits it into towers and heads: CLIP's
``visual_projection`` / ``text_projection`` become the DualEncoder heads; SigLIP's text ``head``
becomes the text head (its image tower pools with its attention-pooling head, no projection).
The towers run the encoder layers one by one for prompts, mirroring transformers' own forward:
CLIP text uses a causal mask plus the padding mask and pools the EOS token (argmax id for legacy
configs with ``eos_token_id == 2``, else the first EOS); SigLIP text is bidirectional, ignores
padding (as it was trained, with ``padding="max_length"``) and pools the last token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..config import build
from ..errors import UserError, unknown_name
from .hf_common import LazyTokenizer, clean_config, from_config, from_pretrained, resolve_source
from .towers import PromptableTextTower, TokenVisionTower, seeded

FAMILIES = ("clip", "siglip")


def _classes(family: str):
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    return {"clip": (CLIPConfig, CLIPModel), "siglip": (SiglipConfig, SiglipModel)}[family]


class HFVisionTower(TokenVisionTower):
    """CLIPVisionModel / SiglipVisionModel; the plain forward is transformers' own."""

    def __init__(self, vision_model: nn.Module, family: str):
        super().__init__()
        self.model, self.family, self.kind = vision_model, family, f"hf {family}"
        c = vision_model.config
        self.width = self.output_dim = c.hidden_size
        self.n_layers = c.num_hidden_layers

    def forward(self, images, return_tokens: bool = False):
        if return_tokens:
            return self.forward_prompted(images, None, return_tokens=True)
        out = self.model(pixel_values=images)
        return out.pooler_output if out.pooler_output is not None else out.last_hidden_state.mean(1)

    def _embed(self, images):
        return self.model.embeddings(images)  # (B, [1 +] g*g, W) with positions

    def _pre_norm(self, x):
        return self.model.pre_layrnorm(x) if self.family == "clip" else x

    def _block(self, i, x):
        return self.model.encoder.layers[i](x, None)

    def _pool(self, x):
        m = self.model
        if self.family == "clip":  # CLS token
            return m.post_layernorm(x[:, 0]), m.post_layernorm(x[:, 1:])
        x = m.post_layernorm(x)
        pooled = m.head(x) if getattr(m, "use_head", False) else x.mean(1)
        return pooled, x


class HFCLIPTextTower(PromptableTextTower):
    """CLIPTextModel / SiglipTextModel (SigLIP's head moved out to the DualEncoder's text head)."""

    def __init__(self, text_model: nn.Module, family: str, tokenizer: LazyTokenizer):
        super().__init__()
        self.model, self.family, self.kind, self._tokenizer = text_model, family, f"hf {family}", tokenizer
        c = text_model.config
        self.width = self.output_dim = c.hidden_size
        self.n_layers = c.num_hidden_layers
        self.context_length = c.max_position_embeddings
        self.pad_id = c.pad_token_id if c.pad_token_id is not None else 0
        self.eos_id = c.eos_token_id
        self.pooling = "last token" if family == "siglip" else ("eot (argmax id)" if self.eos_id == 2 else "first eos")

    def tokenize(self, texts):
        out = self._tokenizer.get()(list(texts), padding="max_length", truncation=True,
                                    max_length=self.context_length, return_tensors="pt")
        ids = out["input_ids"]
        mask = out.get("attention_mask")
        return {"input_ids": ids, "attention_mask": self.default_mask(ids) if mask is None else mask}

    def default_mask(self, input_ids):
        if self.family == "clip":  # valid up to and including the EOS token
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            return (pos[None, :] <= self._eos_index(input_ids)[:, None]).long()
        return (input_ids != self.pad_id).long()

    def _eos_index(self, ids):
        if self.eos_id == 2:
            return ids.to(torch.int).argmax(dim=-1)
        return (ids.to(torch.int) == self.eos_id).int().argmax(dim=-1)

    def save_assets(self, path: Path) -> None:
        self._tokenizer.save(path)

    def forward(self, tokens, return_tokens: bool = False):
        if return_tokens:
            return super().forward(tokens, return_tokens=True)
        tokens = self.as_tokens(tokens)
        mask = tokens["attention_mask"] if self.family == "clip" else None
        return self.model(input_ids=tokens["input_ids"], attention_mask=mask).pooler_output

    def embed_tokens(self, input_ids):
        return self.model.embeddings.token_embedding(input_ids)  # (B, L, W), no positions

    def _input(self, embeds, tokens):
        return self.model.embeddings(inputs_embeds=embeds)

    def _mask(self, x, tokens):
        from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

        if self.family == "clip":
            return create_causal_mask(config=self.model.config, inputs_embeds=x,
                                      attention_mask=tokens["attention_mask"], cache=None)
        return create_bidirectional_mask(config=self.model.config, inputs_embeds=x, attention_mask=None)

    def _block(self, i, x, mask):
        layer = self.model.encoder.layers[i]
        return layer(x, mask, is_causal=True) if self.family == "clip" else layer(x, mask)

    def _finish(self, x, tokens):
        x = self.model.final_layer_norm(x)  # (B, L, W)
        if self.family == "siglip":
            return x[:, -1], x
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, self._eos_index(tokens["input_ids"]).to(x.device)], x


def _preprocess_info(path: Path, family: str, hf_cfg) -> tuple[list, list, int]:
    mean, std = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]) if family == "clip" \
        else ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    size = int(hf_cfg.vision_config.image_size)
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        data = json.loads(pre.read_text())
        mean, std = list(data.get("image_mean") or mean), list(data.get("image_std") or std)
    return [float(v) for v in mean], [float(v) for v in std], size


def hf_config(source: str) -> dict:
    """The vlkit model config for ``hf:NAME_OR_DIR`` (finds or fetches the files; no weights loaded)."""
    path = resolve_source(source)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{path} has no config.json; give a directory written by save_pretrained")
    family = json.loads(cfg_file.read_text()).get("model_type")
    if family not in FAMILIES:
        raise unknown_name("Hugging Face model_type", str(family), FAMILIES,
                           hint="hf: loads CLIP and SigLIP dual encoders; use a composed config for other towers")
    config_cls, _ = _classes(family)
    hf_cfg = config_cls.from_pretrained(str(path))
    mean, std, size = _preprocess_info(path, family, hf_cfg)
    return {"builder": "hf", "family": family, "hf_config": clean_config(hf_cfg.to_dict()), "mean": mean, "std": std,
            "image_size": size, "source": {"spec": f"hf:{source}", "path": str(path)}}


@dataclass
class HFModelConfig:
    builder: str = "hf"
    family: Literal["clip", "siglip"] = "clip"
    hf_config: dict = field(default_factory=dict)
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_size: int = 224
    source: object = None  # {"spec", "path"}: where the weights and tokenizer were read


def build_hf(config: dict, weights: bool = True, assets: Path | None = None):
    """Build a DualEncoder from an ``hf`` config (see :func:`hf_config`)."""
    from .dual_encoder import DualEncoder

    cfg = build(HFModelConfig, config)
    config_cls, model_cls = _classes(cfg.family)
    path = Path(cfg.source["path"]) if isinstance(cfg.source, dict) and cfg.source.get("path") else None
    if weights and path is not None:
        model = from_pretrained(model_cls, path)
    else:
        with seeded(0):
            model = from_config(model_cls, config_cls.from_dict(cfg.hf_config))
    model.eval()
    tokenizer = LazyTokenizer(assets / "text" if assets else None, path)
    text_model, vision_model = model.text_model, model.vision_model
    if cfg.family == "clip":
        image_proj, text_proj = model.visual_projection, model.text_projection
        embed_dim, bias = model.config.projection_dim, None
    else:
        image_proj, text_proj = nn.Identity(), text_model.head
        text_model.head = nn.Identity()  # the tower returns the pooled last token; the head projects
        embed_dim, bias = vision_model.config.hidden_size, model.logit_bias
    return DualEncoder(
        HFVisionTower(vision_model, cfg.family), HFCLIPTextTower(text_model, cfg.family, tokenizer),
        image_proj, text_proj, embed_dim=embed_dim, image_size=cfg.image_size, mean=cfg.mean, std=cfg.std,
        config=config, logit_scale=model.logit_scale, logit_bias=bias,
    )
