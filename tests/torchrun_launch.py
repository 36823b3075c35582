"""Start worker processes the way torchrun does, for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_like_torchrun(argv: list[str], nproc: int, timeout: float = 180) -> list[str]:
    """Run ``python ARGV...`` as ``nproc`` workers with the environment torchrun gives its
    workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and return their outputs; skipping
    the launcher process saves a torch import (seconds here). ``python -m torch.distributed.run
    --nproc_per_node 2 ARGV...`` runs the same workers the same way."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, *argv], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{text[-3000:]}"
    return outputs
