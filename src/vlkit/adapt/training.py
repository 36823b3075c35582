"""How a method trains and predicts: batch sources, the adapt Task, epoch selection on validation.

Every method trains in vlkit's one loop (:func:`vlkit.engine.fit`): :class:`AdaptTask` wraps a
method (``module`` = the method, so the optimizer and checkpoints hold the adapter only) and
moves the shared frozen model to the device at the start. Batches come from

- :class:`FeatureBatches` for methods that leave the image path frozen: cached features of
  ``V`` augmented views; each epoch draws a seeded order and one view index per image
  (``augment=views``, the fast path), or every image's view number ``epoch`` (``augment=fresh``:
  a new crop of every image each epoch, as the references draw them, each encoded once);
- :func:`image_batches` for methods that run the image tower (MaPLe, LoRA on images): the
  engine's :class:`~vlkit.engine.DatasetBatches` with the data layer's seeded augmentation.

Augmentation (:func:`augmentation`) is each method's reference's (crop scale, flip) unless the run
overrides it; a flip is applied only where the dataset declares it safe (a mirrored digit or
arrow emoji is another class). Model selection (:func:`selection_of`) is each method's
reference's: the last epoch (Dassl's ``last_step``: the CoOp family, CLIP-LoRA) or the best
validation epoch; :class:`BestOnValidation` is the engine hook that does the latter (every few
epochs it scores the validation split and keeps the best state; the test split is never
consulted for any choice). Both are recorded per run and stated in the results.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine import DatasetBatches, EngineConfig, Hook, ModuleTask, fit
from .splits import Split


class FeatureBatches:
    """A BatchSource over cached views (V, N, D); the last incomplete batch is dropped (Dassl).

    Each epoch draws a seeded order; the view of each image is drawn at random (the fast path:
    ``V`` views shared by all epochs) or, with ``per_epoch``, is view ``epoch`` (mod V) for every
    image, so V = epochs gives every epoch fresh crops, as the references' data loaders do.
    """

    def __init__(self, views: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int,
                 per_epoch: bool = False):
        self.views, self.labels = views, labels.long()
        self.n = views.shape[1]
        self.batch_size = max(1, min(int(batch_size), self.n))
        self.seed, self.per_epoch = int(seed), bool(per_epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def batches(self, epoch: int, start: int = 0):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n)
        if self.per_epoch:
            view = np.full(self.n, epoch % self.views.shape[0])
        else:
            view = rng.integers(self.views.shape[0], size=self.n)  # one view index per image this epoch
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield {"image_embeds": self.views[view[idx], idx], "labels": self.labels[idx],
                   "index": torch.from_numpy(idx)}


class LabelledImages:
    """Samples of a split at ``positions`` with the task's labels (relabelled classes)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.positions)

    def __getitem__(self, i: int):
        pos = int(self.split.positions[i])
        sample = self.split.dataset[pos]
        meta = {**sample.meta, "index": pos}  # augmentation seeded by the split position
        return dataclasses.replace(sample, label=int(self.split.labels[i]), meta=meta)


def image_batches(split: Split, transform, batch_size: int, seed: int) -> DatasetBatches:
    """The engine's batches over the images; it tells the collate each epoch (fresh crops)."""
    from ..data.collate import Collate

    data = LabelledImages(split)
    return DatasetBatches(data, max(1, min(batch_size, len(data))), Collate(transform, "first", seed), seed=seed)


@dataclass
class Augmentation:
    """How a method's training images are augmented in one run (recorded and stated in the results)."""

    mode: str  # views | fresh | steps (the image tower runs: new crops every step) | eval | none
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = False
    flip_refused: bool = False  # the reference flips, the dataset declares flips unsafe
    n_views: int = 0

    def describe(self) -> str:
        if self.mode == "none":
            return "none (no training images used)"
        if self.mode == "eval":
            return "none (eval-transform features, as the reference)"
        crops = f"crops {self.scale[0]:g}-{self.scale[1]:g}"
        flip = "flip" if self.flip else "no flip (the data declares flips unsafe)" if self.flip_refused else "no flip"
        how = {"views": f"{self.n_views} cached views", "fresh": f"a fresh cached view per epoch ({self.n_views})",
               "steps": "fresh crops every step (the image tower runs)"}[self.mode]
        return f"{how}, {crops}, {flip}"


def augmentation(method, dataset, run, epochs: int) -> Augmentation:
    """The run's augmentation for ``method`` on ``dataset``: the method's reference crop scale and
    flip (``aug_scale``, ``flip`` of its config) unless the run sets them; a flip the method asks
    for is dropped where the dataset's view is not flip-safe, a flip the run forces is kept."""
    if method.train_features == "none":
        return Augmentation("none")
    if method.train_features == "eval":
        return Augmentation("eval")
    cfg = method.config
    scale = run.aug_scale or getattr(cfg, "aug_scale", (1.0, 1.0))
    asked = getattr(cfg, "flip", False) if run.flip is None else bool(run.flip)
    flip = asked and (run.flip is True or dataset.flip_safe)
    mode = "steps" if method.uses_image_tower() else "fresh" if run.augment == "fresh" and method.trainable else "views"
    n_views = max(1, int(epochs)) if mode == "fresh" else int(run.views) if mode == "views" else 0
    return Augmentation(mode, (float(scale[0]), float(scale[1])), flip, asked and not flip, n_views)


def selection_of(method, run) -> str | None:
    """"last" or "val": the run's ``selection`` unless "auto", then the method's reference's
    (its config's ``selection``); None for a training-free method."""
    if not method.trainable:
        return None
    return run.selection if run.selection != "auto" else getattr(method.config, "selection", "last")


class AdaptTask(ModuleTask):
    """The engine Task of a method (its forward is the training step); moves the frozen model too."""

    def on_fit_start(self, state) -> None:
        self.module.model.to(state.device)

    # a method that acts between epochs (PromptSRC's prompt aggregation) defines
    # ``on_epoch_end(done, n_epochs)`` and ``on_fit_end()``; the others need nothing
    def on_epoch_end(self, state) -> None:
        fn = getattr(self.module, "on_epoch_end", None)
        if callable(fn):
            fn(state.epoch + 1, math.ceil(state.total_steps / max(1, state.batches_per_epoch)))

    def on_fit_end(self, state) -> None:
        fn = getattr(self.module, "on_fit_end", None)
        if callable(fn):
            fn()


class BestOnValidation(Hook):
    """Score on validation every ``every`` epochs and at the end; restore the best state at the end."""

    def __init__(self, method, score: Callable[[], float], every: int):
        self.method, self.score, self.every = method, score, max(1, int(every))
        self.best, self.best_epoch, self.best_state = -math.inf, -1, None
        self.history: list[tuple[int, float]] = []
        self._scored_step = -1

    def _check(self, state, epoch: int) -> None:
        acc = float(self.score())
        self.method.train()
        self.history.append((epoch, acc))
        self._scored_step = state.step
        state.record(val_acc=acc)
        if acc > self.best:  # ties keep the earlier (shorter-trained) state
            self.best, self.best_epoch = acc, epoch
            self.best_state = {k: v.detach().clone() for k, v in self.method.state_dict().items()}

    def on_epoch_end(self, state) -> None:
        done = state.epoch + 1
        if done % self.every == 0 or state.step >= state.total_steps:
            self._check(state, done)

    def on_fit_end(self, state) -> None:
        if state.step != self._scored_step:  # a steps-based run may end inside an epoch
            self._check(state, state.epoch + (1 if state.batch else 0))
        if self.best_state is not None:
            self.method.load_state_dict(self.best_state)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1).cpu() == labels.cpu()).float().mean()) if len(labels) else float("nan")


@torch.no_grad()
def predict(method, split: Split, store, batch_size: int = 128) -> torch.Tensor:
    """(N, n_cls) logits of ``method`` on ``split`` (cached features, or images when it must)."""
    was_training = method.training
    method.eval()
    device = method.logit_scale.device
    out = []
    if method.uses_image_tower():
        from ..data.collate import Collate

        collate, data = Collate(store.eval_transform(), "first"), LabelledImages(split)
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            out.append(method.logits({"images": batch["images"].to(device)}).float().cpu())
    else:
        feats = store.eval_features(split.dataset, split.positions)  # (N, D)
        for start in range(0, len(feats), 4096):
            out.append(method.logits({"image_embeds": feats[start:start + 4096].to(device)}).float().cpu())
    method.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, method.n_classes)


def schedule_length(method, shots: int, budget: float) -> tuple[dict[str, int], float]:
    """(training length, its fraction of the paper's): the config's ``epochs``, else the paper's
    schedule times ``budget``."""
    (unit, n), = method.paper_schedule(shots).items()
    if getattr(method.config, "epochs", None):
        epochs = int(method.config.epochs)
        return {"epochs": epochs}, (epochs / n if unit == "epochs" else 1.0)
    length = max(1, int(round(n * budget)))
    return {unit: length}, length / n


def engine_config(method, data, length: dict, scale: float, seed: int, run) -> EngineConfig:
    """The EngineConfig of one method run: its optimiser and schedule, the run's device/precision.

    The optimiser settings are the method config's (each method carries its reference's: SGD
    momentum 0.9 for the Dassl trainers, AdamW betas and eps for CLIP-LoRA and Tip-Adapter-F).
    The warm-up shrinks with the schedule (``scale`` = length / paper length): a tenth of the
    epochs keeps a tenth of Dassl's one warm-up epoch, not a whole epoch at 1e-5.
    """
    cfg = method.config
    per_epoch = max(1, len(data))
    total = length.get("steps") or length["epochs"] * per_epoch
    warmup = min(int(round(cfg.warmup_epochs * per_epoch * min(1.0, scale))), total - 1)
    optim = {"name": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("adamw", "muon"):
        optim.update(betas=tuple(cfg.betas), eps=cfg.eps)
    elif cfg.optimizer == "lion":
        optim.update(betas=tuple(cfg.betas))
    if cfg.optimizer in ("sgd", "muon"):
        optim["momentum"] = cfg.momentum
    schedule = {"name": cfg.schedule, "warmup_steps": max(0, warmup), "total_steps": total, "min_lr": cfg.min_lr}
    if total < 2:
        schedule = {"name": "constant"}
    return EngineConfig(epochs=length.get("epochs", 1), steps=length.get("steps"), batch_size=data.batch_size,
                        optim=optim, schedule=schedule, precision=run.precision, device=run.device, seed=seed,
                        checkpoint_every=0, keep_last=1, log_every=max(1, total // 20), progress=run.progress,
                        tensorboard=False, save_safetensors=False)


def train(method, train_split: Split, val_split: Split | None, store, run, shots: int, seed: int,
          out_dir: Path) -> dict:
    """Prepare, train (when the method trains) and tune a method; returns what happened."""
    info: dict = {"val_acc": None, "best_epoch": None}
    labels = torch.as_tensor(train_split.labels, dtype=torch.long)
    length, scale, batch_size = {}, 1.0, 1
    if method.trainable:
        length, scale = schedule_length(method, shots, run.budget)
        batch_size = max(1, min(int(method.config.batch_size), len(train_split)))
    epochs = length.get("epochs") or math.ceil(length.get("steps", 0) / max(1, len(train_split) // batch_size))
    aug = augmentation(method, train_split.dataset, run, epochs)
    selection = selection_of(method, run)
    info.update(augmentation=aug.describe(), selection=method.describe_selection(selection))
    views = None
    if aug.mode in ("views", "fresh"):
        tf = store.train_transform(aug.scale, aug.flip)
        views = store.view_features(train_split.dataset, train_split.positions, aug.n_views, tf)  # (V, N, D)
        method.prepare(views, labels)
    elif aug.mode == "eval":
        views = store.eval_features(train_split.dataset, train_split.positions)[None]  # (1, N, D)
        method.prepare(views, labels)
    val_score = None
    if val_split is not None and len(val_split.positions):
        val_labels = torch.as_tensor(val_split.labels)

        def val_score() -> float:
            return accuracy(predict(method, val_split, store), val_labels)

    if method.trainable:
        if views is not None:
            data = FeatureBatches(views, labels, batch_size, seed, per_epoch=aug.mode == "fresh")
        else:
            data = image_batches(train_split, store.train_transform(aug.scale, aug.flip), batch_size, seed)
        ecfg = engine_config(method, data, length, scale, seed, run)
        hooks = []
        if selection == "val" and val_score is not None:
            hooks.append(BestOnValidation(method, val_score, max(1, epochs // max(1, run.val_evals))))
        elif selection == "val":
            info["selection"] = method.describe_selection("last") + " (no validation split)"
        result = fit(AdaptTask(method), data, ecfg, out_dir, hooks=hooks)
        info.update(steps=result.step, final_loss=result.losses.get("loss"), length=length)
        if hooks:
            info.update(best_epoch=hooks[0].best_epoch, val_curve=hooks[0].history)
    method.eval()
    if val_split is not None and len(val_split.positions) and not method.uses_image_tower():
        info["tuned"] = method.tune(store.eval_features(val_split.dataset, val_split.positions),
                                    torch.as_tensor(val_split.labels))
    if val_score is not None:
        info["val_acc"] = val_score()
    return info
