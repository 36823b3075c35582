"""ALBEF image-text contrastive loss with momentum distillation and feature queues.

Paper: "Align before Fuse: Vision and Language Representation Learning with Momentum
Distillation" (ALBEF, arXiv 2107.07651); defaults from salesforce/ALBEF
``configs/Pretrain.yaml``: queue 65,536, momentum 0.995, alpha 0.4, temperature 0.07.

For a local batch of B pairs, with momentum features (from an EMA copy of the encoders, see
:class:`MomentumEncoder`) ``I_m, T_m`` and the queues ``Q_I, Q_T`` of past momentum features:

    sim_i2t = s * I @ [T_m ; Q_T]^T                 (B, B + Q)  and sim_t2i likewise
    target  = alpha * softmax(s * I_m @ [T_m ; Q_T]^T) + (1 - alpha) * one_hot
    loss    = (-sum target * log_softmax(sim_i2t) - sum target * log_softmax(sim_t2i)) / 2

averaged over rows; then the momentum features of all ranks are enqueued. ``s = 1 / temp``:
vlkit's ``logit_scale`` is log(1 / temp), and ALBEF's clamp of temp to [0.001, 0.5] becomes
``logit_scale_range = (ln 2, ln 1000)`` (the engine clamps the parameter after each step; the
loss also clamps the value it uses, so an unclamped parameter never gives a scale outside it).
``alpha`` ramps linearly from 0 to ``alpha`` over the first ``alpha_ramp`` of training progress
(ALBEF: the first of 30 epochs, hence 1/30; set ``alpha_ramp = 1 / epochs`` for your run).

Scope and deviations: dual encoder only, so image-text matching (ITM, with hard negatives) and
masked language modelling (MLM) are out of scope. The queues start *empty* and fill up (ALBEF
starts them with random unit vectors, i.e. noise negatives): a filled-count buffer keeps only
real entries. The queue size need not be a multiple of the batch (ALBEF asserts it is): writes
wrap around the end; a batch larger than the queue keeps its last ``queue_size`` rows. The queue
is only updated in training mode (``module.train()``), so a validation pass leaves it as is.
Without ``progress`` in ``**extra`` alpha is the full value.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .base import CLIP_INIT_LOGIT_SCALE, Objective, register, symmetric_cross_entropy
from .distributed import concat_all_gather

__all__ = ["AlbefItcConfig", "AlbefItcLoss", "MomentumEncoder"]


@dataclass
class AlbefItcConfig:
    embed_dim: int = 256  # width of the queued features (ALBEF: 256)
    queue_size: int = 65_536
    momentum: float = 0.995  # for the engine's MomentumEncoder
    alpha: float = 0.4  # weight of the momentum-distilled targets
    alpha_ramp: float = 1 / 30  # progress over which alpha ramps up from 0 (ALBEF: 1 epoch of 30)
    min_temp: float = 0.001
    max_temp: float = 0.5


class MomentumEncoder(nn.Module):
    """An exponential moving average copy of any module (ALBEF / MoCo momentum encoder).

    ``update(model)``: ``p_m <- m * p_m + (1 - m) * p`` for every parameter; floating buffers
    (e.g. BatchNorm statistics) follow the same average, others are copied. Its parameters never
    require gradient; calling it runs the copy without building a graph.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.995):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise UserError(f"momentum must be in [0, 1], got {momentum}; ALBEF uses 0.995")
        self.momentum = momentum
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = self.momentum
        for p_m, p in zip(self.module.parameters(), model.parameters(), strict=True):
            p_m.mul_(m).add_(p.detach(), alpha=1 - m)
        for b_m, b in zip(self.module.buffers(), model.buffers(), strict=True):
            if b_m.is_floating_point():
                b_m.mul_(m).add_(b.detach(), alpha=1 - m)
            else:
                b_m.copy_(b)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@register("albef_itc")
class AlbefItcLoss(Objective):
    """ITC with momentum distillation; owns the queues. Returns ``{"contrastive_loss"}``."""

    Config = AlbefItcConfig
    init_logit_scale = CLIP_INIT_LOGIT_SCALE  # temperature 0.07 as ALBEF
    logit_scale_range = (math.log(1 / 0.5), math.log(1 / 0.001))
    requires = ("momentum_image_features", "momentum_text_features")

    def __init__(self, cfg: AlbefItcConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        if cfg.queue_size < 0 or cfg.embed_dim <= 0:
            raise UserError("albef_itc needs queue_size >= 0 and embed_dim > 0; fix the config")
        self.logit_scale_range = (math.log(1 / cfg.max_temp), math.log(1 / cfg.min_temp))
        self.register_buffer("image_queue", torch.zeros(cfg.queue_size, cfg.embed_dim))
        self.register_buffer("text_queue", torch.zeros(cfg.queue_size, cfg.embed_dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def alpha(self, progress: float | None) -> float:
        if progress is None or self.cfg.alpha_ramp <= 0:
            return self.cfg.alpha
        return self.cfg.alpha * min(1.0, max(0.0, float(progress)) / self.cfg.alpha_ramp)

    @torch.no_grad()
    def enqueue(self, image_features: torch.Tensor, text_features: torch.Tensor) -> None:
        """Write (gathered) momentum features at the pointer, wrapping around the end."""
        size = self.cfg.queue_size
        if size == 0:
            return
        image_features = concat_all_gather(image_features)[-size:]  # (n, D), n <= size
        text_features = concat_all_gather(text_features)[-size:]
        n = image_features.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=self.queue_ptr.device)) % size
        self.image_queue[idx] = image_features.to(self.image_queue.dtype)
        self.text_queue[idx] = text_features.to(self.text_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + n, max=size))

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, **extra):
        self.check_extra(extra)
        image_m = extra["momentum_image_features"].detach()  # (B, D)
        text_m = extra["momentum_text_features"].detach()
        if image_features.shape[-1] != self.cfg.embed_dim:
            raise UserError(
                f"albef_itc queue width is {self.cfg.embed_dim} but features are "
                f"{image_features.shape[-1]}-d; set the objective's embed_dim to the model's"
            )
        lo, hi = self.logit_scale_range
        scale = logit_scale.clamp(lo, hi).exp()
        filled = int(self.queue_filled)
        queued_image = self.image_queue[:filled].to(image_m.dtype)  # (Q, D), Q <= queue_size
        queued_text = self.text_queue[:filled].to(text_m.dtype)
        image_all = torch.cat([image_m, queued_image], dim=0)  # (B + Q, D)
        text_all = torch.cat([text_m, queued_text], dim=0)  # (B + Q, D)
        sim_i2t = scale * image_features @ text_all.T  # (B, B + Q)
        sim_t2i = scale * text_features @ image_all.T  # (B, B + Q)
        with torch.no_grad():
            alpha = self.alpha(extra.get("progress"))
            one_hot = torch.zeros_like(sim_i2t)
            one_hot.fill_diagonal_(1.0)  # positives: the first B columns' diagonal
            target_i2t = alpha * (scale * image_m @ text_all.T).softmax(-1) + (1 - alpha) * one_hot
            target_t2i = alpha * (scale * text_m @ image_all.T).softmax(-1) + (1 - alpha) * one_hot
        loss = symmetric_cross_entropy(sim_i2t, sim_t2i, target_i2t, target_t2i)
        if self.training:
            self.enqueue(image_m, text_m)
        return {"contrastive_loss": loss}
