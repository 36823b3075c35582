"""Training throughput: vlkit's engine against open_clip_train, same architecture, data and batch.

    .venv/bin/python benchmarks/pretrain_throughput.py [--steps 12] [--batch 128] [--rounds 3] [--quick] [--bf16]

Both sides train the same open_clip ViT (64 px, patch 8, 6 x 256) + text transformer (6 x 256,
context 32) on synthetic image-caption pairs, one process, at each precision the CPU has:
open_clip_train fp32 against vlkit fp32, open_clip_train amp_bf16 against vlkit bf16 (where the
CPU multiplies bf16 natively: AVX512_BF16 or AMX; elsewhere bf16 is emulated, many times slower
than fp32, and says nothing about either side, so those rows are skipped unless ``--bf16``), and
both with torch.compile (open_clip_train ``--torchcompile``, vlkit ``engine.compile``;
``--no-compile`` skips them). Every row runs once per round, round-robin, for ``--rounds``
rounds, so drift in a shared machine hits every row alike; each row prints its median and its
rounds. The script first prints what the CPU supports (model, torch's capability, the bf16
flags, what torch reports). Each run is a subprocess, so neither side inherits the other's
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
if precision == "bf16-forced":  # --bf16 on a CPU without native bf16: run bf16 autocast anyway
    import vlkit.engine.precision as vprecision
    vprecision.cpu_has_fast_bf16, precision = (lambda: True), "bf16"

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


def cpu_support(cpuinfo: str) -> dict:
    """What /proc/cpuinfo's text says about bf16: the model name and the bf16-related flags."""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    return {"model": model.group(1).strip() if model else "unknown CPU",
            "flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
            "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"})}


def describe_cpu() -> tuple[str, bool]:
    """One line on what this CPU supports, and whether vlkit sees native bf16 (as its precision: auto does)."""
    import torch

    from vlkit.engine import cpu_has_fast_bf16

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    info = cpu_support(text)
    probes = {name: getattr(torch.cpu, fn, lambda: None)() for name, fn in
              (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))}
    native = cpu_has_fast_bf16()
    line = (f"CPU: {info['model']}, {os.cpu_count()} cores; torch {torch.__version__} capability "
            f"{torch.backends.cpu.get_cpu_capability()}; flags {' '.join(info['flags']) or 'none of avx2/avx512'}; "
            f"torch reports avx512_bf16 {probes['avx512_bf16']}, amx {probes['amx']}: "
            + ("bf16 is native here" if native else "no native bf16 here (emulated: bf16 speed cannot be measured fairly)"))
    return line, native


def plan(rounds: int, bf16: bool, compile: bool) -> list[tuple[str, str, str, bool]]:
    """Every run in order: (row name, side, precision, compile), each row once per round."""
    rows = [("open_clip fp32", "open_clip", "fp32", False), ("vlkit fp32", "vlkit", "fp32", False)]
    if bf16:
        rows += [("open_clip amp_bf16", "open_clip", "amp_bf16", False), ("vlkit bf16", "vlkit", "bf16", False)]
    if compile:
        rows += [("open_clip fp32 --torchcompile", "open_clip", "fp32", True),
                 ("vlkit fp32 engine.compile", "vlkit", "fp32", True)]
    return [row for _ in range(rounds) for row in rows]  # round-robin: drift hits every row alike


RATIOS = [("fp32", "vlkit fp32", "open_clip fp32"), ("bf16", "vlkit bf16", "open_clip amp_bf16"),
          ("fp32 compiled", "vlkit fp32 engine.compile", "open_clip fp32 --torchcompile")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds; every row runs once per round, round-robin; each row prints its median (default 3)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile rows (each compiles for a minute or two first)")
    p.add_argument("--bf16", action="store_true",
                   help="run the bf16 rows on a CPU without native bf16 too (emulated: slow, not a fair measure)")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    import peers

    peers.require("benchmarks/pretrain_throughput.py", "open_clip_train", peers.OPEN_CLIP_TRAIN)
    steps, batch = (4, 32) if args.quick else (args.steps, args.batch)
    args.rounds = 1 if args.quick else max(1, args.rounds)
    line, native = describe_cpu()
    print(line)
    if not native:
        print("bf16 rows: " + ("run anyway (--bf16), emulated" if args.bf16 else
                               "skipped (emulated bf16 is slower than fp32 on both sides; --bf16 runs them)"))
    print(f"steps {steps}, batch {batch}, rounds {args.rounds}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows: dict[str, list[dict]] = {}
        for name, side, precision, compile in plan(args.rounds, native or args.bf16, not args.no_compile):
            if side == "open_clip":
                result = run_openclip(work, precision, steps, batch, compile=compile)
            else:
                forced = precision == "bf16" and not native
                result = run_vlkit(work, "bf16-forced" if forced else precision, steps, batch, compile=compile)
            rows.setdefault(name, []).append(result)
        rates = {name: sorted(r["samples_per_s"] for r in runs) for name, runs in rows.items()}
        best = {name: r[len(r) // 2] for name, r in rates.items()}  # median over rounds
        for name, runs in rows.items():
            spread = f"  rounds: {', '.join(f'{x:.1f}' for x in rates[name])}" if len(runs) > 1 else ""
            print(f"{name:<32} {best[name]:8.1f} samples/s   (whole subprocess {runs[0]['wall_s']:.0f} s){spread}")
        for label, ours, theirs in RATIOS:
            if ours in best and theirs in best:
                note = "" if label != "bf16" or native else "  (emulated bf16: not a fair measure)"
                print(f"ratio {label + ' (vlkit / open_clip):':<36} {best[ours] / best[theirs]:.2f}  (target >= 1.5){note}")
            elif label == "bf16":
                print("ratio bf16: not measured (this CPU has no native bf16)")

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
