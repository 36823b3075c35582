"""Numeric precision for the training loop: fp32, bf16 autocast, or fp16 AMP with a GradScaler.

Why the fallbacks: bf16 autocast on a CPU pays off only when the CPU multiplies bf16 natively
(AVX512_BF16 or AMX). On a plain AVX2 CPU PyTorch emulates bf16 and a step can be several times
slower than fp32, so ``"auto"`` and ``"bf16"`` fall back to fp32 there and say so in one line.

``requested`` values (``EngineConfig.precision``):

- ``"fp32"``: no autocast.
- ``"bf16"``: bf16 autocast (CUDA with bf16 support, or a CPU with AVX512_BF16/AMX); else fp32.
- ``"amp"``: on CUDA, fp16 autocast with a GradScaler (loss scaling against fp16 underflow);
  on a CPU it means bf16 autocast, with the same fallback as ``"bf16"``.
- ``"auto"``: the fastest safe choice: bf16 on CUDA when supported (no scaler needed), fp16 AMP
  on older CUDA cards, bf16 on a CPU that multiplies bf16 natively, fp32 otherwise.

The optimizer state and master weights stay fp32 in every mode (autocast only changes the
dtype of the ops inside the forward pass).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserError

PRECISIONS = ("fp32", "bf16", "amp", "auto")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512_BF16 or AMX tiles)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a private probe that changed: fall through to /proc/cpuinfo
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@dataclass
class Precision:
    """What the loop does for one precision choice; ``note`` is a line worth showing the user."""

    name: str  # "fp32" | "bf16" | "fp16"
    device_type: str  # "cpu" | "cuda"
    scaler: Any = None  # torch.amp.GradScaler for fp16, else None
    note: str = ""

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        """Context manager for the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def _cpu_precision(requested: str) -> Precision:
    if requested == "fp32":
        return Precision("fp32", "cpu")
    if cpu_has_fast_bf16():
        return Precision("bf16", "cpu", note=f"precision {requested}: bf16 autocast on CPU")
    cap = torch.backends.cpu.get_cpu_capability()
    return Precision(
        "fp32",
        "cpu",
        note=f"precision {requested}: training in fp32, since this CPU ({cap}) has no "
        "AVX512_BF16/AMX and bf16 autocast would be slower than fp32 here",
    )


def _cuda_precision(requested: str, device: torch.device) -> Precision:
    if requested == "fp32":
        return Precision("fp32", "cuda")
    bf16_ok = torch.cuda.is_bf16_supported()
    if requested == "bf16" or (requested == "auto" and bf16_ok):
        if not bf16_ok:
            return Precision("fp32", "cuda", note="precision bf16: this GPU lacks bf16; fp32")
        return Precision("bf16", "cuda")
    scaler = torch.amp.GradScaler("cuda")
    return Precision("fp16", "cuda", scaler=scaler, note="precision: fp16 autocast + GradScaler")


def resolve_precision(requested: str, device: torch.device | str) -> Precision:
    """Turn a config value into a :class:`Precision` for ``device`` (CPU or CUDA)."""
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_precision(requested, device)
    if device.type != "cpu":
        return Precision("fp32", device.type, note=f"precision {requested}: fp32 on {device.type}")
    return _cpu_precision(requested)
