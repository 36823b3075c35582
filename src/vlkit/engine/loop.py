"""vlkit's one training loop: ``fit(task, data, cfg, out_dir, resume=False, hooks=())``.

Every training job (pretraining, alignment, few-shot adaptation) is a :class:`Task` run by this
loop; nobody forks it. One step, in order (as open_clip's ``train_one_epoch``):

1. ``optimizer.zero_grad``; the batch moves to the device;
2. ``task.training_step(batch, state)`` under autocast (:mod:`.precision`);
3. the loss terms are averaged over the ranks; a NaN or infinite loss stops the run here, with
   one line naming the step, the terms and the last good checkpoint (the bad state is never
   stepped into, nor saved);
4. backward (through a GradScaler in fp16), optional grad-norm clipping, optimizer step,
   scheduler step;
5. ``on_step_end`` of the task, then of each hook; at an epoch's end ``on_epoch_end``;
6. a metrics line every ``log_every`` steps, a checkpoint every ``checkpoint_every`` steps
   and always at the end (also on early stop).

``data`` is a :class:`~vlkit.engine.batches.BatchSource` (``len()`` batches per epoch,
``batches(epoch, start)``); a resumed run restores model, optimizer, scheduler, scaler, RNG
states, task and hook state and the data position, so its losses equal those of a run that was
never stopped (bit for bit on a CPU with ``num_workers=0``). Distributed runs start with
torchrun; only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from .. import config as vconfig
from ..errors import UserError
from . import checkpoint as ckpt
from .compile import compile_task
from .config import EngineConfig, FitResult
from .lock import run_dir_lock
from .distributed import DistInfo, all_reduce_mean, any_rank, barrier, cleanup, gather_to_main
from .distributed import init_distributed, wrap_ddp
from .logger import METRICS_FILE, RunLogger, read_metrics, truncate_metrics
from .precision import resolve_precision
from .task import Hook, Task, TaskHooks, TrainState, loss_terms, move_to


def fit(
    task: Task,
    data,
    cfg: EngineConfig | None = None,
    out_dir: str | Path = "runs/train",
    resume: bool | str | Path = False,
    hooks: Iterable[Hook] = (),
) -> FitResult:
    """Train ``task`` on ``data`` into ``out_dir``; see the module docstring.

    ``resume``: False (a new run), True (continue from the newest checkpoint in ``out_dir``),
    or the path of a checkpoint file to continue from.
    """
    cfg = cfg or EngineConfig()
    check_config(cfg)
    if not isinstance(getattr(task, "module", None), torch.nn.Module):
        raise UserError("the task has no `module` (an nn.Module with the trainable parameters)")
    if not any(p.requires_grad for p in task.module.parameters()):
        raise UserError("the task's module has no trainable parameters; unfreeze some to train")
    if not callable(getattr(data, "batches", None)):
        raise UserError(
            f"fit needs a batch source with len() and batches(epoch, start), got "
            f"{type(data).__name__}; wrap a Dataset in vlkit.engine.DatasetBatches"
        )
    if len(data) < 1:
        raise UserError("the data gives no batch per epoch; use more samples or a smaller batch")
    info = init_distributed(cfg.distributed, cfg.device)
    try:
        with run_dir_lock(out_dir, enabled=info.is_main):  # one run per out_dir (rank 0 writes)
            return _Trainer(task, data, cfg, Path(out_dir), info, list(hooks)).run(resume)
    finally:
        cleanup(info)


def _finite(value, at_least: float | None = None, above: float | None = None) -> bool:
    if value is None:
        return True
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return (math.isfinite(v) and (at_least is None or v >= at_least)
            and (above is None or v > above))


def check_config(cfg: EngineConfig) -> None:
    """Every engine value, checked before a run builds or writes anything (one line each).

    ``cfg.validate()`` (counts), then the optimizer and schedule sections as their dataclasses:
    a NaN, infinite or negative lr, weight decay, eps or momentum is refused here rather than
    found at the first step (a NaN lr trains NaN weights without a NaN loss until the next step).
    """
    cfg.validate()
    from . import optim, schedule

    ocfg = cfg.optim
    if not dataclasses.is_dataclass(ocfg):
        ocfg = vconfig.build(optim.OptimConfig, ocfg or {}, prefix="optim.")
    checks = [
        ("lr", ocfg.lr, _finite(ocfg.lr, above=0), "a positive number"),
        ("weight_decay", ocfg.weight_decay, _finite(ocfg.weight_decay, at_least=0), "a number >= 0"),
        ("eps", ocfg.eps, _finite(ocfg.eps, above=0), "a positive number"),
        ("momentum", ocfg.momentum, _finite(ocfg.momentum, at_least=0) and (ocfg.momentum or 0) < 1,
         "a number in [0, 1)"),
        ("betas", ocfg.betas, ocfg.betas is None or all(_finite(b, at_least=0) and b < 1 for b in ocfg.betas),
         "two numbers in [0, 1)"),
    ]
    if cfg.schedule is not None:
        scfg = cfg.schedule
        if not dataclasses.is_dataclass(scfg):
            scfg = vconfig.build(schedule.ScheduleConfig, scfg or {}, prefix="schedule.")
        schedule.SCHEDULES.get(scfg.name)  # an unknown name: the valid ones, now
        if cfg.steps and scfg.warmup_steps >= 0:  # the run's length is known before the data is
            schedule.check(dataclasses.replace(scfg, total_steps=scfg.total_steps or cfg.steps))
        checks += [
            ("schedule.warmup_steps", scfg.warmup_steps, scfg.warmup_steps >= 0, "an integer >= 0"),
            ("schedule.total_steps", scfg.total_steps, scfg.total_steps >= 0, "an integer >= 0 (0: the run's steps)"),
            ("schedule.min_lr", scfg.min_lr, _finite(scfg.min_lr, at_least=0), "a number >= 0"),
            ("schedule.warmup_lr", scfg.warmup_lr, _finite(scfg.warmup_lr, at_least=0), "a number >= 0"),
            ("schedule.warmup_start_factor", scfg.warmup_start_factor,
             _finite(scfg.warmup_start_factor, at_least=0) and scfg.warmup_start_factor <= 1, "a number in [0, 1]"),
        ]
    for key, value, ok, want in checks:
        if not ok:
            key = key if key.startswith("schedule.") else f"optim.{key}"
            raise UserError(f"engine config: {key} must be {want}, got {value!r}; fix engine.{key}")


def build_optimization(task: Task, cfg: EngineConfig, total_steps: int):
    """(optimizer, scheduler or None): the task's ``configure_optimizers`` or the defaults."""
    custom = getattr(task, "configure_optimizers", None)
    if callable(custom):
        out = custom(cfg, total_steps)
        return out if isinstance(out, tuple) else (out, None)
    from . import optim, schedule  # lazy: the engine runs any task, these are its defaults

    ocfg = cfg.optim
    if not dataclasses.is_dataclass(ocfg):
        ocfg = vconfig.build(optim.OptimConfig, ocfg or {}, prefix="optim.")
    optimizer = optim.build_optimizer(task.module, ocfg)
    if cfg.schedule is None:
        return optimizer, None
    scfg = cfg.schedule
    if not dataclasses.is_dataclass(scfg):
        scfg = vconfig.build(schedule.ScheduleConfig, scfg or {}, prefix="schedule.")
    if not scfg.total_steps:
        scfg = dataclasses.replace(scfg, total_steps=total_steps)
    return optimizer, schedule.build_scheduler(optimizer, scfg)


def _samples_in(batch: Any) -> int:
    """Samples in a local batch: the first dimension of its first tensor (or list length)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)) and batch:
        tensors = [v for v in batch if isinstance(v, torch.Tensor) and v.ndim]
        if tensors:
            return int(tensors[0].shape[0])
        return len(batch[0]) if isinstance(batch[0], (list, tuple)) else len(batch)
    return 0


class _Trainer:
    """One run of :func:`fit`: set-up, resume, the steps, checkpoints and the result."""

    def __init__(self, task, data, cfg: EngineConfig, out_dir: Path, info: DistInfo, hooks):
        self.task, self.data, self.cfg, self.out_dir, self.info = task, data, cfg, out_dir, info
        self.hooks: list[Hook] = [TaskHooks(task), *hooks]
        self.n_batches = len(data)
        self.total = cfg.steps or cfg.epochs * self.n_batches
        self.saved_step: int | None = None
        self._pending_notes: list[str] = []  # said once the logger exists
        self.elapsed_before = 0.0  # training seconds of earlier (resumed) runs
        self.samples_done = 0  # global samples trained on by this process's run
        self.window_samples = 0  # ... since the last metrics line

    # ------------------------------------------------------------------ set-up
    def run(self, resume) -> FitResult:
        cfg, info = self.cfg, self.info
        ckpt.seed_everything(cfg.seed + info.rank)
        module = self.task.module.to(info.device)
        self.precision = resolve_precision(cfg.precision, info.device)
        optimizer, scheduler = build_optimization(self.task, cfg, self.total)
        self.state = TrainState(self.total, self.n_batches, info, self.out_dir, module, module,
                                optimizer, scheduler, cfg)
        history, saved_rng = [], None
        if info.is_main:  # leftovers of a killed write (this run holds the directory's lock)
            removed = ckpt.clean_temp_files(self.out_dir)
            if removed:
                self._pending_notes.append(f"removed {len(removed)} temporary file(s) left by a killed "
                                           f"write, e.g. {removed[0].name}")
        if resume:
            saved_rng = self._restore(resume)
            history = _resumed_history(self.out_dir / METRICS_FILE, self.state.step, info)
            if history:
                self.state.losses = {k: v for k, v in history[-1].items() if k.endswith("loss")}
        else:
            _refuse_to_overwrite(self.out_dir, info)
        if cfg.compile:
            compiled = compile_task(self.task, info.device)
            self._pending_notes.append(f"torch.compile: {', '.join(compiled)} (the first steps compile)" if compiled
                                       else "torch.compile: nothing to compile (the task runs no tower)")
        self.state.model = wrap_ddp(module, info, cfg.find_unused_parameters)
        self.log = RunLogger(self.out_dir, enabled=info.is_main, total_steps=self.total,
                             start_step=self.state.step, progress=cfg.progress,
                             log_to=cfg.trackers(), history=history,
                             tracker_options={"project": cfg.wandb_project, "config": vconfig.to_dict(cfg)})
        try:
            for line in [self.precision.note, *self._pending_notes]:
                self.log.note(line)
            if info.is_main:
                vconfig.save(cfg, self.out_dir / "engine_config.yaml")
            self._call("on_fit_start")
            if saved_rng is not None:  # last, so nothing above shifts the restored streams
                ckpt.set_rng_state(saved_rng)
            self.t0 = self.window_t0 = time.perf_counter()
            self._train()
            return self._finish()
        finally:
            self.log.close()

    def _call(self, name: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self.state, *args)

    # ------------------------------------------------------------------ the loop
    def _train(self) -> None:
        s = self.state
        while s.step < self.total and not s.should_stop:
            stepped = False
            for batch in self.data.batches(s.epoch, s.batch):
                stepped = True
                if self._after_step(self._step(batch), epoch_ended=s.batch + 1 >= self.n_batches):
                    break
            else:  # the source ran short of len(): the epoch is over anyway
                if not stepped:
                    raise UserError(f"the data gave no batch for epoch {s.epoch} from batch "
                                    f"{s.batch}; its len() promises {self.n_batches}")
                self._end_epoch()

    def _step(self, batch) -> dict[str, float]:
        """One optimizer step; returns the logged scalars (mean over ranks) and the lr used."""
        s, opt, scaler = self.state, self.state.optimizer, self.precision.scaler
        n_global = getattr(self.data, "batch_size", None) or _samples_in(batch) * s.world_size
        batch = move_to(batch, s.device)
        opt.zero_grad(set_to_none=True)
        with self.precision.autocast():
            out = self.task.training_step(batch, s)
        loss, scalars = loss_terms(out)
        names = sorted(scalars)
        reduced = all_reduce_mean(torch.stack([scalars[k].to(s.device) for k in names]), self.info)
        values = dict(zip(names, reduced.tolist()))
        if not math.isfinite(values["loss"]):
            raise self._nan_error(values)
        if not loss.requires_grad:
            raise UserError("the training loss does not depend on any trainable parameter; "
                            "compute it through state.model")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if self.cfg.grad_clip:
            if scaler is not None:
                scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            values["grad_norm"] = float(norm)
        values["lr"] = s.lr  # the lr this step used (before the scheduler moves it)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if s.scheduler is not None:
            s.scheduler.step()
        self.samples_done += n_global
        self.window_samples += n_global
        return values

    def _end_epoch(self) -> None:
        s = self.state
        self._call("on_epoch_end")
        s.epoch, s.batch = s.epoch + 1, 0

    def _after_step(self, values: dict[str, float], epoch_ended: bool) -> bool:
        """Hooks, epoch end, metrics and checkpoint after a step; True when the pass must end."""
        s = self.state
        epoch_of_step = s.epoch
        s.step, s.batch = s.step + 1, s.batch + 1
        s.losses = {k: v for k, v in values.items() if k != "lr"}
        self._call("on_step_end")
        if epoch_ended:
            self._end_epoch()
        s.should_stop = any_rank(s.should_stop, self.info)
        done = s.step >= self.total or s.should_stop
        record = None
        if s.step % self.cfg.log_every == 0 or done or s.pending:
            record = self._log(values, epoch_of_step)
        self.log.advance(1, record)
        every = self.cfg.checkpoint_every
        if done or (every and s.step % every == 0):
            self._save()
        return done or epoch_ended

    def _log(self, values: dict[str, float], epoch: int) -> dict[str, Any]:
        s, now = self.state, time.perf_counter()
        window = now - self.window_t0
        speed = self.window_samples / window if window > 0 and self.window_samples else None
        record = {"step": s.step, "epoch": epoch, **values, "samples_per_s": speed,
                  "time": round(self.elapsed_before + now - self.t0, 4), **s.pending}
        s.pending = {}
        self.log.log(record)
        self.window_t0, self.window_samples = now, 0
        return record

    def _nan_error(self, values: dict[str, float]) -> UserError:
        s = self.state
        terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
        where = str(s.last_checkpoint) if s.last_checkpoint else "none written yet"
        return UserError(
            f"the loss is not finite at step {s.step + 1} (epoch {s.epoch}, batch {s.batch}): "
            f"{terms}; stopped without saving this state; last good checkpoint: {where}; lower "
            "the lr, set grad_clip or use precision fp32, then resume"
        )

    # ------------------------------------------------------------------ checkpoints
    def _save(self) -> None:
        """Checkpoint the state after ``state.step`` (rank 0 writes; every rank's RNG inside)."""
        s, info = self.state, self.info
        if self.saved_step == s.step:
            return
        rngs = gather_to_main(ckpt.rng_state(), info)
        path = ckpt.checkpoint_path(self.out_dir, s.step)
        if info.is_main:
            scaler = self.precision.scaler
            payload = {
                "step": s.step, "epoch": s.epoch, "batch": s.batch, "world_size": info.world_size,
                "model": s.module.state_dict(),
                "optimizer": s.optimizer.state_dict(),
                "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rngs,
                "extra": self.hooks[0].state_dict(),
                "hooks": {self._hook_key(i, h): h.state_dict() for i, h in enumerate(self.hooks)
                          if i > 0},
                "config": vconfig.to_dict(self.cfg),
                "elapsed": self.elapsed_before + time.perf_counter() - self.t0,
            }
            ckpt.save_checkpoint(payload, path)
            ckpt.prune(self.out_dir, self.cfg.keep_last)
        barrier(info)  # the file exists for every rank before anyone goes on
        self.saved_step, s.last_checkpoint = s.step, path
        self._call("on_checkpoint", path)

    @staticmethod
    def _hook_key(i: int, hook: Hook) -> str:
        return f"{i}:{type(hook).__name__}"

    def _restore(self, resume) -> dict[str, Any] | None:
        """Load a checkpoint into the run (all but the RNG streams, returned for later)."""
        s, info = self.state, self.info
        if info.is_main:  # rank 0 verifies, and moves a damaged checkpoint aside, first
            path, saved = ckpt.load_resume_checkpoint(self.out_dir, resume)
        barrier(info)
        if not info.is_main:
            path, saved = ckpt.load_resume_checkpoint(self.out_dir, resume)
        ckpt.check_architecture(s.module, saved["model"], path)
        s.module.load_state_dict(saved["model"])
        try:
            s.optimizer.load_state_dict(saved["optimizer"])
        except (ValueError, KeyError) as e:
            raise UserError(f"checkpoint {path}: its optimizer state does not fit this run ({e}); "
                            "resume with the optimizer config that wrote it") from None
        resized = None
        if s.scheduler is not None and saved.get("scheduler") is not None:
            s.scheduler.load_state_dict(saved["scheduler"])
            resized = getattr(s.scheduler, "resized_from", None)
        if self.precision.scaler is not None and saved.get("scaler") is not None:
            self.precision.scaler.load_state_dict(saved["scaler"])
        s.step, s.epoch, s.batch = saved["step"], saved["epoch"], saved["batch"]
        s.last_checkpoint, self.saved_step = path, saved["step"]
        self.elapsed_before = float(saved.get("elapsed", 0.0))
        self.hooks[0].load_state_dict(saved.get("extra") or {})
        hook_states = saved.get("hooks") or {}
        for i, hook in enumerate(self.hooks[1:], start=1):
            if self._hook_key(i, hook) in hook_states:
                hook.load_state_dict(hook_states[self._hook_key(i, hook)])
        changed = _changed_keys(saved.get("config") or {}, vconfig.to_dict(self.cfg))
        where = f"resuming from {path} at step {s.step} (epoch {s.epoch}, batch {s.batch})"
        self._pending_notes += [where] + ([f"config changed since: {', '.join(changed)}"]
                                         if changed else [])
        if resized:
            self._pending_notes.append(
                f"lr schedule rebuilt for {s.scheduler.config.total_steps} steps (was {resized}): "
                f"from step {s.step} the lr follows the new length (now {s.lr:.3g})")
        rngs = saved.get("rng") or []
        if len(rngs) == info.world_size:
            return rngs[info.rank]
        self._pending_notes.append(f"the checkpoint has RNG states for {len(rngs)} processes, "
                                   f"not {info.world_size}: random streams are reseeded")
        ckpt.seed_everything(self.cfg.seed + info.rank + 7919 * s.step)
        return None

    # ------------------------------------------------------------------ the end
    def _finish(self) -> FitResult:
        s, info = self.state, self.info
        model_path = None
        if self.cfg.save_safetensors:
            model_path = self.out_dir / "model.safetensors"
            if info.is_main:
                ckpt.save_safetensors(s.module, model_path)
        self._call("on_fit_end")
        train_s = time.perf_counter() - self.t0
        return FitResult(
            step=s.step, epoch=s.epoch, losses=dict(s.losses), history=list(self.log.history),
            checkpoint=s.last_checkpoint, out_dir=self.out_dir,
            samples_per_s=self.samples_done / train_s if train_s > 0 else 0.0,
            model_path=model_path, stopped_early=s.should_stop,
        )


def check_out_dir(out_dir: str | Path, resume: bool | str | Path) -> None:
    """Refuse, before anything is built or written, a run that ``fit`` would refuse anyway:
    a fresh run into a directory that holds one, or a resume with nothing to resume."""
    if resume:
        ckpt.find_resume_checkpoint(out_dir, resume)
        return
    existing = ckpt.latest_checkpoint(out_dir)
    if existing is not None:
        raise UserError(f"{out_dir} already holds a run (checkpoint {existing.name}); resume it "
                        "(--resume / resume=True) or choose another out_dir")


def _refuse_to_overwrite(out_dir: Path, info: DistInfo) -> None:
    """A fresh run never mixes with (or destroys) an earlier run's checkpoints and metrics."""
    check_out_dir(out_dir, False)
    if info.is_main:
        truncate_metrics(out_dir / METRICS_FILE, 0)  # lines of a run that never checkpointed


def _resumed_history(path: Path, step: int, info: DistInfo) -> list[dict[str, Any]]:
    """The metrics lines up to the resumed ``step``; rank 0 also cuts the file there."""
    if info.is_main:
        return truncate_metrics(path, step)
    return [r for r in read_metrics(path) if r.get("step", 0) <= step]


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
