"""vlkit's training engine: one loop with hooks, checkpoints and exact resume, DDP, precision.

    from vlkit.engine import EngineConfig, DatasetBatches, ModuleTask, fit

    data = DatasetBatches(dataset, batch_size=256, collate_fn=collate, seed=0)
    result = fit(task, data, EngineConfig(epochs=10, optim={"lr": 5e-4}), "runs/x")
    result = fit(task, data, cfg, "runs/x", resume=True)      # after a crash or a kill

Parts: :mod:`.task` (the Task protocol, TrainState, Hook), :mod:`.batches` (restartable,
sharded batches), :mod:`.loop` (``fit``), :mod:`.checkpoint` (atomic, weights_only-loadable
checkpoints), :mod:`.distributed` (torchrun/DDP), :mod:`.precision` (fp32/bf16/fp16 AMP),
:mod:`.logger` (bar, metrics.jsonl), :mod:`.trackers` (TensorBoard, W&B: ``log_to``).
Optimizers and lr schedules (:mod:`.optim`, :mod:`.schedule`) are the loop's defaults, imported
when ``fit`` needs them.
"""

from .batches import BatchSource, DatasetBatches
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from .config import EngineConfig, FitResult
from .distributed import DistInfo, init_distributed
from .loop import fit
from .precision import Precision, cpu_has_fast_bf16, resolve_precision
from .task import Hook, ModuleTask, Task, TrainState, loss_terms, move_to

__all__ = [
    "BatchSource", "DatasetBatches", "DistInfo", "EngineConfig", "FitResult", "Hook",
    "ModuleTask", "Precision", "Task", "TrainState", "cpu_has_fast_bf16", "fit",
    "init_distributed", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "loss_terms", "move_to", "resolve_precision",
]
