"""One Muon step: vlkit's (Newton-Schulz in fp32) against timm's (Newton-Schulz in bf16).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/muon_step.py [--rounds 3]

The parameters are the weight matrices of the throughput benchmark's ViT (6 vision + 6 text
blocks of width 256: qkv, out, fc1, fc2). One step of each per round, alternating, after one
untimed step each (state allocation); prints the median ms per step of each and their ratio,
with the CPU capability torch reports: the measurement behind the docstring of
vlkit.engine.optim.
"""

from __future__ import annotations

import argparse
import statistics
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


def ms_per_step(opt: torch.optim.Optimizer) -> float:
    t0 = time.perf_counter()
    opt.step()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import timm
    from timm.optim import Muon as TimmMuon

    from vlkit.engine.optim import Muon

    ours = Muon([{"params": params(), "muon": True}], lr=1e-3)
    theirs = TimmMuon([{"params": params(), "use_muon": True}], lr=1e-3, nesterov=True,
                      ns_coefficients="original")
    ours.step(), theirs.step()  # state allocation out of the timing
    times: dict[str, list[float]] = {"vlkit": [], "timm": []}
    for _ in range(max(1, args.rounds)):  # alternating, so a busy machine slows both alike
        times["vlkit"].append(ms_per_step(ours))
        times["timm"].append(ms_per_step(theirs))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads), timm {timm.__version__}, {len(times['vlkit'])} rounds")
    print(f"vlkit Muon (Newton-Schulz fp32): {med['vlkit']:9.0f} ms/step   rounds: "
          + ", ".join(f"{t:.0f}" for t in times["vlkit"]))
    print(f"timm Muon  (Newton-Schulz bf16): {med['timm']:9.0f} ms/step   rounds: "
          + ", ".join(f"{t:.0f}" for t in times["timm"]))
    print(f"ratio timm / vlkit: {med['timm'] / med['vlkit']:.1f}x")


if __name__ == "__main__":
    main()
