"""The pretraining / alignment task the engine trains: a DualEncoder and its objectives.

``ContrastiveModule`` holds everything with trainable state (the model and the objective, whose
ALBEF queues are buffers) so the engine can wrap it in DDP and checkpoint it whole. Each step
it encodes the batch, taking pooled features of frozen towers from their caches when given,
and returns the objective's loss dict.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import nn

from ..engine.task import Hook, TrainState
from ..objectives import clamp_logit_scale


class ContrastiveModule(nn.Module):
    def __init__(self, model: nn.Module, objective: nn.Module, momentum: nn.Module | None = None):
        super().__init__()
        self.model, self.objective = model, objective
        # The momentum copy is not trained; keeping it outside the DDP-wrapped parameters
        # (a plain attribute) would lose it in checkpoints, so it lives here as a submodule.
        self.momentum = momentum
        self.needs_tokens = any(k in objective.requires for k in ("image_tokens", "text_tokens"))

    def _image(self, model, batch) -> dict[str, torch.Tensor]:
        if "image_pooled" in batch:
            return {"features": model.project_image(batch["image_pooled"])}
        if "image_stage" in batch:  # the frozen stage's cached output: run the trainable part only
            return {"features": model.project_image(model.visual.forward_from_stage(batch["image_stage"]))}
        if self.needs_tokens and model is self.model:
            out = model.encode_image(batch["images"], return_tokens=True)
            return {"features": out["features"], "image_tokens": out["tokens"]}
        return {"features": model.encode_image(batch["images"])}

    def _text(self, model, batch) -> dict[str, torch.Tensor]:
        if "text_pooled" in batch:
            return {"features": model.project_text(batch["text_pooled"])}
        if self.needs_tokens and model is self.model:
            out = model.encode_text(batch["texts"], return_tokens=True)
            return {"features": out["features"], "text_tokens": out["tokens"], "text_mask": out["mask"]}
        return {"features": model.encode_text(batch["texts"])}

    def forward(self, batch: dict, progress: float = 0.0) -> dict[str, torch.Tensor]:
        image, text = self._image(self.model, batch), self._text(self.model, batch)
        extra: dict[str, Any] = {"progress": progress}
        extra.update({k: v for k, v in {**image, **text}.items() if k != "features"})
        if "positive_mask" in batch:
            extra["positive_mask"] = batch["positive_mask"]
        if "text_bank_pooled" in batch:  # every cached caption, through the current head
            extra["text_bank"] = self.model.project_text(batch["text_bank_pooled"])
            extra["text_bank_index"], extra["text_bank_other"] = batch["text_bank_index"], batch["text_bank_other"]
        if self.momentum is not None:
            with torch.no_grad():
                extra["momentum_image_features"] = self._image(self.momentum.module, batch)["features"]
                extra["momentum_text_features"] = self._text(self.momentum.module, batch)["features"]
        m = self.model
        return self.objective(image["features"], text["features"], m.logit_scale, m.logit_bias, **extra)


class ContrastiveTask:
    """Engine task: looks frozen-tower features up, runs the module, clamps the logit scale.

    ``stage_cache``: a :class:`~vlkit.pretrain.features.FrozenStageViews` (the image tower's
    frozen stage, per augmented view); ``bank_texts``: the captions an objective with ``text_negatives: bank`` contrasts every
    image against (those the data can draw), looked up in ``text_cache`` once.
    """

    def __init__(self, module: ContrastiveModule, text_cache=None, image_cache=None,
                 bank_texts: Sequence[str] | None = None, stage_cache=None):
        self.module = module
        self.text_cache, self.image_cache, self.stage_cache = text_cache, image_cache, stage_cache
        self.bank = self.bank_pos = None
        if bank_texts is not None:
            bank_texts = list(dict.fromkeys(bank_texts))
            self.bank = text_cache.lookup(bank_texts)  # (M, W) pooled, before the head
            self.bank_pos = {t: i for i, t in enumerate(bank_texts)}

    def _bank_inputs(self, batch: dict, device) -> dict[str, torch.Tensor]:
        """Bank features, each text's bank row (B,) and the image's other captions (B, M)."""
        pos = self.bank_pos
        index = torch.tensor([pos[t] for t in batch["texts"]], dtype=torch.long)
        other = torch.zeros(len(index), len(pos), dtype=torch.bool)
        for r, caps in enumerate(batch["captions"]):
            other[r, [pos[c] for c in caps if c in pos]] = True
        if self.bank.device != torch.device(device):
            self.bank = self.bank.to(device)  # once: the bank is fixed for the run
        return {"text_bank_pooled": self.bank, "text_bank_index": index.to(device),
                "text_bank_other": other.to(device)}

    def training_step(self, batch: dict, state: TrainState) -> dict[str, torch.Tensor]:
        batch = dict(batch)
        if self.text_cache is not None:
            batch["text_pooled"] = self.text_cache.lookup(batch["texts"]).to(state.device)
        if self.image_cache is not None:
            batch["image_pooled"] = self.image_cache.lookup(batch["index"]).to(state.device)
        if self.stage_cache is not None:  # (B, C, h, w): one cached view per image this epoch
            batch["image_stage"] = self.stage_cache.lookup(batch["index"], state.epoch).to(state.device)
        if self.bank is not None:
            batch.update(self._bank_inputs(batch, state.device))
        if "images" in batch and torch.is_tensor(batch["images"]):
            batch["images"] = batch["images"].to(state.device, non_blocking=True)
        if "text_index" in batch:  # several captions per image: each is a positive of its image
            ti = batch["text_index"].to(state.device)  # (T,)
            batch["positive_mask"] = ti[None, :] == torch.arange(len(batch["index"]), device=state.device)[:, None]
        out = state.model(batch, state.progress)
        out["logit_scale"] = self.module.model.logit_scale.detach().exp()
        return out

    def compile_targets(self) -> list:
        """What ``engine.compile`` compiles: the towers a step runs (not those read from a cache)."""
        m = self.module.model
        return ([m.visual] if self.image_cache is None else []) + ([m.text] if self.text_cache is None else [])

    def on_step_end(self, state: TrainState) -> None:
        lo, hi = self.module.objective.logit_scale_range
        clamp_logit_scale(self.module.model, max=hi, min=lo)
        if self.module.momentum is not None:
            self.module.momentum.update(self.module.model)


class TimeBudget(Hook):
    """Stop the run (with a final checkpoint) once training has used ``seconds`` of wall time.

    Each process counts from its own start, so a resumed run gets the budget again.
    ``stopped_at`` is the step it stopped the run at (None: the run reached its planned end).
    """

    def __init__(self, seconds: float):
        self.seconds, self.start, self.stopped_at = float(seconds), None, None

    def on_fit_start(self, state: TrainState) -> None:
        self.start, self.stopped_at = time.perf_counter(), None

    def on_step_end(self, state: TrainState) -> None:
        if state.step < state.total_steps and time.perf_counter() - self.start >= self.seconds:
            state.should_stop = True
            self.stopped_at = state.step
