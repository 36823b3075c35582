"""Training throughput: vlkit's engine against open_clip_train, same architecture, data and batch.

    .venv/bin/python benchmarks/pretrain_throughput.py [--steps 12] [--batch 128] [--rounds 3] [--quick]

Both sides train the same open_clip ViT (64 px, patch 8, 6 x 256) + text transformer (6 x 256,
context 32) on synthetic image-caption pairs, one process, in this order, interleaved:
open_clip fp32 and vlkit fp32 for ``--rounds`` rounds (each row prints its median; one run
varies by 10-20% on a small shared machine), open_clip amp_bf16 once, vlkit ``precision:
auto`` where it is not fp32, then both with torch.compile for ``--rounds`` rounds
(open_clip_train ``--torchcompile``, vlkit ``engine.compile``; ``--no-compile`` skips them). Each run is a subprocess, so neither side inherits the other's
warm state. Samples/s is the median over logged windows after the first (open_clip's own
`samples/s` log; vlkit's metrics.jsonl), so start-up and compilation are excluded on both
sides; the whole subprocess time is printed next to it.

A second comparison is LiT: the text tower locked. open_clip `--lock-text` still runs it forward
every step; vlkit encodes each distinct caption once (feature cache) and reuses it. Here the
whole run is timed, cache building included, over 3 epochs of 512 distinct captions.

Prints samples/s of each side and the ratios. open_clip_train ships with open-clip-torch; the
packages it imports (braceexpand, webdataset, pandas) are not vlkit dependencies: ``make bench``
installs them, and without them this script says so in one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCH = "vlkit-bench-vit"
MODEL_CFG = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 256, "layers": 6, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6},
}


def run_openclip(workdir: Path, precision: str, steps: int, batch: int, lock_text: bool = False,
                 epochs: int = 1, samples: int | None = None, compile: bool = False) -> dict:
    cfg_dir = workdir / "oc_configs"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / f"{ARCH}.json").write_text(json.dumps(MODEL_CFG))
    n = samples or steps * batch
    name = f"oc-{precision}-{'lit' if lock_text else 'full'}-{time.time_ns()}"
    args = ["--dataset-type", "synthetic", "--train-num-samples", str(n), "--batch-size", str(batch),
            "--epochs", str(epochs), "--model", ARCH, "--precision", precision, "--workers", "0",
            "--device", "cpu", "--logs", str(workdir / "oc_logs"), "--name", name, "--log-every-n-steps", "2",
            "--save-frequency", "0", "--lr", "5e-4", "--warmup", "2", "--report-to", "", "--seed", "0"]
    if lock_text:
        args += ["--lock-text", "--lock-text-freeze-layer-norm"]
    if compile:
        args += ["--torchcompile"]
    code = (
        "import sys, open_clip\n"
        f"open_clip.add_model_config({str(cfg_dir)!r})\n"
        "from open_clip_train.main import main\n"
        "main(sys.argv[1:])\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = workdir / "oc_logs" / name / "out.log"
    text = log.read_text() if log.exists() else proc.stdout + proc.stderr
    rates = [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.]+)/s", text)]
    if not rates:
        raise SystemExit(f"open_clip_train did not report throughput:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {"samples_per_s": steady(rates), "wall_s": wall}


def steady(rates: list[float]) -> float:
    """Median samples/s of the logged windows after the first (start-up, compilation)."""
    rest = sorted(rates[1:]) or rates
    mid = len(rest) // 2
    return rest[mid] if len(rest) % 2 else (rest[mid - 1] + rest[mid]) / 2


VLKIT_CODE = r"""
import json, sys, time
import torch
from PIL import Image
from vlkit import models
from vlkit.data import Sample
from vlkit.data.collate import Collate
from vlkit.engine import DatasetBatches, EngineConfig, fit
from vlkit.objectives import build
from vlkit.pretrain.task import ContrastiveModule, ContrastiveTask
from vlkit.pretrain.features import FrozenTextFeatures

arch, model_cfg, precision, steps, batch, lock_text, epochs, samples, compile, out = json.loads(sys.argv[1])

class Synthetic:
    # open_clip's synthetic set: one black image; distinct captions so a text cache earns nothing free
    def __init__(self, n, size):
        self.n, self.image = n, Image.new("RGB", (size, size))
    def __len__(self): return self.n
    def __getitem__(self, i):
        return Sample(image=self.image, captions=[f"dummy caption {i}"], label=0, labels={}, meta={"index": i})
    def captions_at(self, i): return [f"dummy caption {i}"]
    def fingerprint(self): return f"synthetic-{self.n}"

t0 = time.perf_counter()
model = models.load({"builder": "openclip", "arch": arch, "model_cfg": model_cfg})
ds = Synthetic(samples or steps * batch, model.image_size)
text_cache = None
if lock_text:
    model.freeze("text")
    text_cache = FrozenTextFeatures(model, [c for i in range(len(ds)) for c in ds.captions_at(i)], ds.fingerprint())
collate = Collate(model.preprocess(train=True), caption="first", seed=0)
data = DatasetBatches(ds, batch, collate, seed=0)
cfg = EngineConfig(epochs=epochs, steps=None if samples else steps, batch_size=batch, precision=precision, compile=compile,
                   optim={"name": "adamw", "lr": 5e-4}, schedule={"name": "cosine", "warmup_steps": 2},
                   checkpoint_every=0, log_every=2, progress=False, tensorboard=False, save_safetensors=False)
res = fit(ContrastiveTask(ContrastiveModule(model, build([{"name": "clip"}])), text_cache), data, cfg, out)
wall = time.perf_counter() - t0
rates = [h["samples_per_s"] for h in res.history if "samples_per_s" in h]
rest = sorted(rates[1:]) or rates  # median of the windows after the first, as steady() does
mid = len(rest) // 2
print(json.dumps({"samples_per_s": rest[mid] if len(rest) % 2 else (rest[mid - 1] + rest[mid]) / 2, "wall_s": wall}))
"""


def run_vlkit(workdir: Path, precision: str, steps: int, batch: int, lock_text: bool = False,
              epochs: int = 1, samples: int | None = None, compile: bool = False) -> dict:
    out = workdir / f"vl-{precision}-{time.time_ns()}"
    payload = json.dumps([ARCH, MODEL_CFG, precision, steps, batch, lock_text, epochs, samples, compile, str(out)])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", VLKIT_CODE, payload], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"vlkit run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def fast_bf16() -> bool:
    from vlkit.engine import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds of the fp32 and compiled rows; each row prints its median (default 3)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile rows (each compiles for a minute or two first)")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    import peers

    peers.require("benchmarks/pretrain_throughput.py", "open_clip_train", peers.OPEN_CLIP_TRAIN)
    steps, batch = (4, 32) if args.quick else (args.steps, args.batch)
    args.rounds = 1 if args.quick else max(1, args.rounds)
    print(f"torch threads: {os.cpu_count()} cores; steps {steps}, batch {batch}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows: dict[str, list[dict]] = {}

        def add(name: str, result: dict) -> None:
            rows.setdefault(name, []).append(result)

        for _ in range(args.rounds):  # interleaved, so drift in the machine hits both sides
            add("open_clip fp32", run_openclip(work, "fp32", steps, batch))
            add("vlkit fp32", run_vlkit(work, "fp32", steps, batch))
        # bf16 autocast is many times slower on CPUs without AVX512_BF16/AMX: one round, fewer steps
        add("open_clip amp_bf16", run_openclip(work, "amp_bf16", steps if fast_bf16() else 4, batch))
        if fast_bf16():  # vlkit's precision: auto picks bf16 here; elsewhere auto is fp32 (the row above)
            add("vlkit auto (bf16 here)", run_vlkit(work, "auto", steps, batch))
        for _ in range(0 if args.no_compile else args.rounds):  # open_clip_train --torchcompile
            add("open_clip fp32 --torchcompile", run_openclip(work, "fp32", steps, batch, compile=True))
            add("vlkit fp32 engine.compile", run_vlkit(work, "fp32", steps, batch, compile=True))
        rates = {name: sorted(r["samples_per_s"] for r in runs) for name, runs in rows.items()}
        best = {name: r[len(r) // 2] for name, r in rates.items()}  # median over rounds
        for name, runs in rows.items():
            spread = f"  rounds: {', '.join(f'{x:.1f}' for x in rates[name])}" if len(runs) > 1 else ""
            print(f"{name:<32} {best[name]:8.1f} samples/s   (whole subprocess {runs[0]['wall_s']:.0f} s){spread}")
        oc_best = max(v for name, v in best.items() if name.startswith("open_clip"))
        vl_best = max(v for name, v in best.items() if name.startswith("vlkit"))
        if not fast_bf16():
            print("vlkit precision: auto is fp32 on this CPU (no AVX512_BF16/AMX): the vlkit fp32 row")
        print(f"ratio fp32 (vlkit / open_clip):       {best['vlkit fp32'] / best['open_clip fp32']:.2f}  (target >= 1.0)")
        print(f"ratio fastest (vlkit / open_clip):    {vl_best / oc_best:.2f}  (target >= 1.3)")

        n = 64 if args.quick else 512
        lit = {
            "open_clip --lock-text": run_openclip(work, "fp32", 0, batch, lock_text=True, epochs=3, samples=n),
            "vlkit cached text": run_vlkit(work, "fp32", 0, batch, lock_text=True, epochs=3, samples=n),
        }
        for name, r in lit.items():
            print(f"LiT {name:<24} {3 * n / r['wall_s']:8.1f} samples/s over the whole run ({r['wall_s']:.1f} s, start-up included)")
        print(f"LiT ratio (vlkit / open_clip, whole run): {lit['open_clip --lock-text']['wall_s'] / lit['vlkit cached text']['wall_s']:.2f}")


if __name__ == "__main__":
    main()
