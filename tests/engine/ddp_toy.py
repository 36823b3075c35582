"""A DDP run of a toy task, for test_ddp.py: launched as

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/engine/ddp_toy.py OUT

Each rank saves ``OUT/rank{r}.pt``: the gradients of step 1, the parameters at the end, the
indices of the samples it saw and one random draw per step; rank 0 alone writes metrics and
checkpoints. The same ``build()`` run in one process with the same global batch must give the
same numbers. The workers then resume the run from its step-2 checkpoint (into ``OUT/b``):
each rank must get its own RNG stream back and end with the same parameters.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from vlkit.engine import DatasetBatches, EngineConfig, Hook, fit, init_distributed  # noqa: E402

STEPS = 4


class LinearTask:
    """Linear regression whose loss is the mean over the batch (over the global batch, once
    DDP averages the ranks' gradients)."""

    def __init__(self):
        torch.manual_seed(0)
        self.module = nn.Linear(6, 3)
        self.seen: list[int] = []
        self.draws: list[float] = []  # one torch RNG draw per step, to test per-rank RNG resume

    def training_step(self, batch, state):
        x, y, idx = batch  # (B, 6), (B, 3), (B,)
        self.seen += idx.tolist()
        self.draws.append(torch.rand(()).item())
        return {"mse_loss": ((state.model(x) - y) ** 2).mean()}


class Record(Hook):
    """Keep step 1's gradients and the final parameters."""

    def __init__(self):
        self.grads = None

    def on_step_end(self, state):
        if state.step == 1:
            self.grads = {n: p.grad.detach().clone() for n, p in state.module.named_parameters()}


def build():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(48, 6, generator=g), torch.randn(6, 3, generator=g)
    y = x @ w + 0.1 * torch.randn(48, 3, generator=g)
    dataset = [(x[i], y[i], torch.tensor(i)) for i in range(48)]
    cfg = EngineConfig(steps=STEPS, batch_size=8, precision="fp32", progress=False, log_every=1,
                       checkpoint_every=2, keep_last=0, tensorboard=False, device="cpu",
                       optim={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0},
                       schedule={"name": "constant"})
    return LinearTask(), DatasetBatches(dataset, cfg.batch_size, seed=3), cfg


def run(out_dir: str, resume=False) -> dict:
    task, data, cfg = build()
    rec = Record()
    result = fit(task, data, cfg, out_dir, resume=resume, hooks=[rec])
    return {"grads": rec.grads, "params": dict(task.module.state_dict()), "seen": task.seen,
            "losses": [r["loss"] for r in result.history], "draws": task.draws}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    # Joined here (not by fit) so that the group outlives both fits below.
    init_distributed(requested=True, device="cpu")
    first = run(os.path.join(out_dir, "a"))
    resumed = run(os.path.join(out_dir, "b"), resume=os.path.join(out_dir, "a", "checkpoints",
                                                                  "step_00000002.pt"))
    torch.save({"first": first, "resumed": resumed},
               os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
    torch.distributed.destroy_process_group()
