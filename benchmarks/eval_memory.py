"""Peak memory of retrieval ranking against gallery size: vlkit's blocked ranking against the
unblocked one (query chunks x the whole gallery, vlkit's ranking before issue 16).

    .venv/bin/python benchmarks/eval_memory.py                       # 1k .. 200k images, ~10 min on 1 thread
    .venv/bin/python benchmarks/eval_memory.py --max-queries 0       # every query (hours on a laptop)
    .venv/bin/python benchmarks/eval_memory.py --quick               # seconds; the smoke test's run

No model: each image gets a random unit feature (dim 512, float32) and ``--captions`` random unit
text features, as L2-normalised features from a model would be. Each (size, method) runs in a
fresh Python process, which reports its peak resident set size (``VmHWM``: torch's CPU
allocations bypass ``tracemalloc``) and the growth of that peak during the ranking (``step``:
peak after ranking minus peak after building the features). The table prints both methods side
by side, with the ratio unblocked / blocked, and checks that both give the same ranks.

``--max-queries Q`` ranks only the first Q queries of each direction (against the whole
gallery, as always): every block of queries scans the same gallery with the same arrays, so the
peak is reached by the first block and Q only sets the time. The default (2048 = two blocks of
the default size) keeps the run short; ``--max-queries 0`` ranks every query.

Target (issue 16): the blocked step flat beyond the block size; 200k images under 2 GB in all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time

METHODS = ("blocked", "unblocked")
DEFAULT_SIZES = [1_000, 5_000, 20_000, 50_000, 100_000, 200_000]
QUICK = ["--sizes", "1000,8000", "--captions", "2", "--block", "128", "--max-queries", "256"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="gallery sizes (images), comma-separated")
    p.add_argument("--captions", type=int, default=2, help="captions (text features) per image")
    p.add_argument("--dim", type=int, default=512, help="feature dimension")
    p.add_argument("--block", type=int, default=1024,
                   help="retrieval chunk_size: the block side (and the unblocked ranking's query chunk)")
    p.add_argument("--max-queries", type=int, default=2048, help="queries ranked per direction (0: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each measured process")
    p.add_argument("--quick", action="store_true", help="a seconds-long run: " + " ".join(QUICK))
    p.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        given = sys.argv[1:] if argv is None else argv
        args = p.parse_args([*QUICK, *[a for a in given if a != "--quick"]])
        args.quick = True
    try:
        args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes must be integers separated by commas, got {args.sizes!r}")
    if not args.size_list or min(args.size_list) < 1 or min(args.captions, args.dim, args.block, args.threads) < 1:
        p.error("--sizes, --captions, --dim, --block and --threads must be positive")
    if args.max_queries < 0:
        p.error("--max-queries must be 0 (all) or positive")
    return args


# -- the measured process ------------------------------------------------------------------------


def peak_mb() -> float:
    """This process's peak RSS in MiB: Linux's VmHWM, which starts afresh at exec. (``ru_maxrss``
    does not: a child keeps the high-water mark of the parent it was forked from, so a child of
    a 1 GB pytest process would report 1 GB whatever it does; it is the fallback elsewhere.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def unit_rows(n: int, dim: int, seed: int):
    """(n, dim) random unit rows, normalised in place (no second n x dim array)."""
    import torch

    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x.div_(x.norm(dim=1, keepdim=True))


def unblocked_ranks(queries, gallery, query_ids, gallery_ids, chunk: int):
    """vlkit's ranking before issue 16: chunks of queries against the whole gallery."""
    import torch

    from vlkit.evaluate.retrieval import best_positive_rank

    out = []
    for s in range(0, len(queries), chunk):
        scores = queries[s : s + chunk] @ gallery.T  # (chunk, M)
        positive = query_ids[s : s + chunk, None] == gallery_ids[None, :]  # (chunk, M)
        out.append(best_positive_rank(scores, positive))
    return torch.cat(out)


def child(method: str, n_images: int, args: argparse.Namespace) -> dict:
    import torch

    from vlkit.evaluate.retrieval import blocked_best_positive_rank

    torch.set_num_threads(args.threads)
    images = unit_rows(n_images, args.dim, seed=0)  # (N, D)
    texts = unit_rows(n_images * args.captions, args.dim, seed=1)  # (N * c, D)
    owner = torch.arange(n_images).repeat_interleave(args.captions)  # (N * c,)
    image_ids = torch.arange(n_images)
    q = args.max_queries or None
    rank = blocked_best_positive_rank if method == "blocked" else unblocked_ranks
    before = peak_mb()
    start = time.perf_counter()
    text_ranks = rank(texts[:q], images, owner[:q], image_ids, args.block)
    image_ranks = rank(images[:q], texts, image_ids[:q], owner, args.block)
    seconds = time.perf_counter() - start
    after = peak_mb()
    ranks = torch.cat([text_ranks, image_ranks])
    return {"method": method, "n_images": n_images, "n_texts": len(texts), "n_queries": len(ranks),
            "peak_mb": after, "step_mb": after - before, "seconds": seconds,
            "ranks": [int(ranks.sum()), int((ranks * torch.arange(len(ranks))).sum() % 1_000_003)]}


def measure(method: str, n_images: int, argv: list[str]) -> dict:
    """One fresh process per measurement, so each peak is its own."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", method, str(n_images)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"eval_memory: {method} at {n_images} images failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the driver ------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    lines = ["| images | texts | queries | blocked peak MB | blocked step MB | unblocked peak MB | unblocked step MB "
             "| ratio peak | ratio step | blocked s | unblocked s |", "|" + "---:|" * 11]
    for r in rows:
        b, u = r["blocked"], r["unblocked"]
        lines.append(f"| {b['n_images']:,} | {b['n_texts']:,} | {b['n_queries']:,} | {b['peak_mb']:.0f} | "
                     f"{b['step_mb']:.1f} | {u['peak_mb']:.0f} | {u['step_mb']:.1f} | "
                     f"{u['peak_mb'] / b['peak_mb']:.2f} | "
                     f"{u['step_mb'] / max(b['step_mb'], 1.0):.1f} | {b['seconds']:.1f} | {u['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return {}
    child_argv = [a for a in argv if a != "--quick"] if not args.quick else QUICK + [a for a in argv if a != "--quick"]
    rows = []
    for n in args.size_list:
        row = {m: measure(m, n, child_argv) for m in METHODS}
        if row["blocked"]["ranks"] != row["unblocked"]["ranks"]:
            raise SystemExit(f"eval_memory: blocked and unblocked ranks differ at {n} images")
        rows.append(row)
        print(f"{n:>9,} images: blocked peak {row['blocked']['peak_mb']:.0f} MB, "
              f"unblocked peak {row['unblocked']['peak_mb']:.0f} MB", flush=True)
    text = table(rows)
    command = "python benchmarks/eval_memory.py " + shlex.join(argv)
    largest = rows[-1]["blocked"]
    print(f"\n{command.strip()}\n\n{text}\n")
    print(f"blocked step, smallest -> largest gallery: {rows[0]['blocked']['step_mb']:.1f} -> "
          f"{largest['step_mb']:.1f} MB; peak at {largest['n_images']:,} images: {largest['peak_mb']:.0f} MB "
          f"(target: under 2048)")
    return {"rows": rows, "table": text, "command": command.strip()}


if __name__ == "__main__":
    main()
