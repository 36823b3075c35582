"""One Muon step: vlkit's (Newton-Schulz in fp32) against timm's (Newton-Schulz in bf16).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/muon_step.py [--steps 3]

The parameters are the weight matrices of the throughput benchmark's ViT (6 vision + 6 text
blocks of width 256: qkv, out, fc1, fc2). Prints ms per step of each and their ratio, with the
CPU capability torch reports; the measurement behind the docstring of vlkit.engine.optim.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

SHAPES = [(768, 256), (256, 256), (1024, 256), (256, 1024)] * 12


def params() -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    out = [nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in SHAPES]
    for p in out:
        p.grad = torch.randn(p.shape, generator=g)
    return out


def ms_per_step(opt: torch.optim.Optimizer, steps: int) -> float:
    opt.step()  # state allocation out of the timing
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    import timm
    from timm.optim import Muon as TimmMuon

    from vlkit.engine.optim import Muon

    ours = ms_per_step(Muon([{"params": params(), "muon": True}], lr=1e-3), args.steps)
    theirs = ms_per_step(TimmMuon([{"params": params(), "use_muon": True}], lr=1e-3, nesterov=True,
                                  ns_coefficients="original"), args.steps)
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads), timm {timm.__version__}")
    print(f"vlkit Muon (Newton-Schulz fp32): {ours:9.0f} ms/step")
    print(f"timm Muon  (Newton-Schulz bf16): {theirs:9.0f} ms/step   ratio timm / vlkit {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
