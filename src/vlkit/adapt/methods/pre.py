"""PRE: CoOp's context re-parameterised by a prompt encoder with a residual connection.

"PRE: Vision-Language Prompt Learning with Reparameterization Encoder" (Pham Thi Minh, 2023;
arXiv 2309.07760; minhanh151/PRE ``trainers/pre.py``). CoOp's learned context ``ctx``
(n_ctx, W) is passed through a prompt encoder before it enters the frozen text tower:
``ctx' = ctx + encoder(ctx)``. The default encoder is a one-layer bidirectional LSTM over the
n_ctx context tokens with hidden size W/2 per direction (so its output is W wide); the
variants are an MLP (Linear W -> 64, ReLU, Linear 64 -> W) and a transformer encoder (two
layers, two heads, sinusoidal positions over the context tokens). Cross-entropy only; the
context and the encoder train, both towers stay frozen. Defaults (the base-to-new script,
``vit_b16_ep50_ctxv1``): 4 tokens from "a photo of a", one shared LSTM, SGD lr 0.002 (momentum
0.9, wd 5e-4), batch 32, 50 epochs, 1 warm-up epoch at 1e-5 then cosine, random-resized crops
at 0.08-1 and flips, the last epoch's model reported.

Deviations: ``encoder`` picks the variant (the reference's LSTM1 / MLP1 / transformer; its
two-layer LSTM2 / MLP2 and its per-token ``SEPARATE`` networks are not offered; the
base-to-new script runs one shared network). The reference's LSTM dropout (0.05) is dropped:
torch ignores it with one layer. The reference's transformer branch cannot run (it reads an
undefined ``max_length`` and adds the positions to the residual too); here the positions are
added only to the encoder's input and a Linear(W -> W) output layer ends it, so every
variant's residual adds a delta to ``ctx`` (zeroing an encoder's ``out`` layer gives CoOp's
prompts exactly). As in CoOp here: image features come from the shared cache of augmented
views, flips only where the dataset declares them safe, cosine stepped per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UserError, unknown_name
from ..base import help_field, register_method
from .coop import CoOp, CoOpConfig


class LSTMEncoder(nn.Module):
    """One-layer bidirectional LSTM over the context tokens, W/2 per direction: (..., n_ctx, W) -> same."""

    def __init__(self, width: int, bottleneck: int = 0):
        super().__init__()
        self.out = nn.LSTM(width, width // 2, num_layers=1, bidirectional=True, batch_first=True)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.out(ctx)[0]  # (n_ctx, W) unbatched, or (n_cls, n_ctx, W) with CSC


class MLPEncoder(nn.Module):
    """Linear(W -> bottleneck), ReLU, Linear(bottleneck -> W), per token (the reference's MLP1)."""

    def __init__(self, width: int, bottleneck: int = 64):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(width, bottleneck), nn.ReLU())
        self.out = nn.Linear(bottleneck, width)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(ctx))


def sinusoidal_positions(n: int, width: int) -> torch.Tensor:
    """(n, width) sine/cosine positions (the reference's ``positional_encoding``, base 10000)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.pow(10000.0, -torch.arange(0, width, 2, dtype=torch.float32) / width)  # (width/2,)
    out = torch.zeros(n, width)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


class TransformerPromptEncoder(nn.Module):
    """Two transformer layers (2 heads, dropout 0.05) over context + positions, then Linear(W -> W)."""

    def __init__(self, width: int, bottleneck: int = 0):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=width, nhead=2, dropout=0.05, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.out = nn.Linear(width, width)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        x = ctx if ctx.dim() == 3 else ctx.unsqueeze(0)  # (n, n_ctx, W)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2]).to(x)
        return self.out(self.layers(x)).reshape(ctx.shape)


ENCODERS = {"lstm": LSTMEncoder, "mlp": MLPEncoder, "transformer": TransformerPromptEncoder}


@dataclass
class PREConfig(CoOpConfig):
    """Paper (base-to-new): 4 tokens from "a photo of a", LSTM encoder, SGD lr 0.002, batch 32, 50 epochs."""

    n_ctx: int = help_field(4, "number of learned context tokens (ignored with ctx_init: the phrase's length)")
    ctx_init: str = help_field("a photo of a", "init phrase for the context ('': random, std 0.02)")
    encoder: str = help_field("lstm", "prompt encoder: lstm (bidirectional, W/2 per direction), mlp or transformer")
    bottleneck: int = help_field(64, "hidden width of the mlp encoder")


@register_method("pre")
class PRE(CoOp):
    Config = PREConfig

    def __init__(self, model, config=None, classnames=(), templates=None):
        super().__init__(model, config, classnames, templates)
        cfg, width = self.config, model.text.width
        if cfg.encoder not in ENCODERS:
            raise unknown_name("PRE encoder", cfg.encoder, ENCODERS, "set pre.encoder=lstm")
        if cfg.encoder != "mlp" and width % 2:
            raise UserError(f"pre.encoder={cfg.encoder} needs an even text width, this model's is {width}; "
                            "use pre.encoder=mlp")
        if cfg.bottleneck < 1:
            raise UserError(f"pre.bottleneck must be at least 1, got {cfg.bottleneck}")
        self.encoder = ENCODERS[cfg.encoder](width, cfg.bottleneck).to(model.device)

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        return {"epochs": 50}

    def context_tokens(self) -> torch.Tensor:
        """(n_cls, n_ctx, W): ctx + encoder(ctx), the encoder run once per distinct context."""
        ctx = self.context.ctx  # (n_ctx, W), or (n_cls, n_ctx, W) with CSC
        ctx = ctx + self.encoder(ctx).to(ctx.dtype)  # the residual connection
        return ctx if ctx.dim() == 3 else ctx.unsqueeze(0).expand(self.n_classes, -1, -1)

