"""bf16 training on a CPU: autocast covers the forward only; master weights, their gradients and
the optimizer state (the fused AdamW's included) stay fp32; the loss the loop sums is fp32."""

from __future__ import annotations

import torch

from engine_toy import ToyTask, toy_config, toy_data
from vlkit.engine import Hook, fit
from vlkit.engine import precision as precision_mod


class Dtypes(Hook):
    """Records, after each step, the dtypes of weights, grads and optimizer state."""

    def __init__(self):
        self.seen: dict[str, set] = {"weights": set(), "grads": set(), "state": set(), "autocast": set()}

    def on_step_end(self, state):
        params = [p for g in state.optimizer.param_groups for p in g["params"]]
        self.seen["weights"] |= {p.dtype for p in params}
        self.seen["grads"] |= {p.grad.dtype for p in params if p.grad is not None}
        self.seen["state"] |= {v.dtype for s in state.optimizer.state.values() for k, v in s.items()
                               if torch.is_tensor(v) and k != "step"}
        self.seen["autocast"].add(torch.is_autocast_enabled("cpu"))  # hooks run outside autocast
        self.fused = state.optimizer.defaults.get("fused")


class BF16Task(ToyTask):
    """The toy task, recording the dtype its forward computes in."""

    dtypes: set

    def training_step(self, batch, state):
        x, _ = batch
        self.dtypes = getattr(self, "dtypes", set()) | {state.model(x).dtype}
        return super().training_step(batch, state)


def test_bf16_step_keeps_fp32_weights_grads_and_adamw_state(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: True)  # as on AVX512_BF16 / AMX
    hook, task = Dtypes(), BF16Task(custom_optim=False)
    res = fit(task, toy_data(n=16), toy_config(epochs=1, precision="bf16", checkpoint_every=0,
                                               optim={"name": "adamw", "lr": 1e-2}), tmp_path, hooks=[hook])
    assert task.dtypes == {torch.bfloat16}  # the forward ran under bf16 autocast
    assert hook.seen == {"weights": {torch.float32}, "grads": {torch.float32}, "state": {torch.float32},
                         "autocast": {False}}
    assert hook.fused is True  # torch's fused AdamW kernel, stepping fp32 grads
    assert isinstance(res.losses["loss"], float) and res.step == 2
