"""Evaluation throughput: vlkit.evaluate against CLIP_benchmark, same model, same data.

    .venv/bin/python benchmarks/eval_throughput.py                      # preset:tiny-clip
    .venv/bin/python benchmarks/eval_throughput.py --rounds 5 --threads 2
    .venv/bin/python benchmarks/eval_throughput.py --model openclip:ViT-S-32 --rounds 1  # ~35 min, 1 CPU thread

Two tasks, each scored by both toolkits in the same process:

- zero-shot classification on ``digits`` (test split, 360 images, the view's 3 templates):
  CLIP_benchmark's ``zeroshot_classification.evaluate`` against ``vlkit.evaluate.run(...,
  ["zeroshot"])``;
- image-text retrieval on ``openmoji`` (test split, 858 images, 4 captions each):
  ``zeroshot_retrieval.evaluate`` against ``vlkit.evaluate.run(..., ["retrieval"])``.

Both sides get the same model, the same images through the same transform (vlkit's, as torch
DataLoaders with batch size 64 and no workers for CLIP_benchmark), fp32 (``amp=False``:
CLIP_benchmark's default autocast would run bfloat16 on a CPU) and the same thread count.
A ``preset:`` model reaches CLIP_benchmark through a thin open_clip-style wrapper
(``encode_image`` / ``encode_text`` and a tokenizer); an ``openclip:ARCH`` model is built by
open_clip with random weights, saved to a local file, and given to CLIP_benchmark as open_clip's
own module while vlkit loads ``openclip:ARCH@file``.

vlkit is timed three ways: without its feature cache, on a first run (cold cache: images
encoded and written), and on a second evaluation that finds the image features on disk (what
a second ``vlkit eval`` of the same model and data sees). Rounds interleave the sides and
alternate who goes first; medians are printed. images/s counts the task's images over the
whole evaluation (text encoding included). The metrics of both must agree within 1e-6.

CLIP_benchmark is not a dependency of vlkit: ``make bench`` installs it (the ``bench`` extra);
without it this script says so in one line and exits 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # CLIP_benchmark draws a bar per batch

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

TOLERANCE = 1e-6
BATCH = 64
SIDES = ["vlkit, no feature cache", "vlkit, first run (cold cache)", "vlkit, cached run (disk)"]


def clip_benchmark_metrics():
    """CLIP_benchmark's metric modules (after :func:`peers.require` has checked they import)."""
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    zeroshot_classification.accuracy = _topk_accuracy  # see _topk_accuracy
    return zeroshot_classification, zeroshot_retrieval


def _topk_accuracy(output, target, topk=(1,)):
    """CLIP_benchmark's ``accuracy``, with ``.item()`` where it calls ``float()`` on a (1,)
    array, which NumPy 2.x refuses (TypeError) -- same computation, same numbers."""
    pred = output.topk(max(topk), 1, True, True)[1].t()  # (k, N)
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


# -- the model, open_clip style -------------------------------------------------------------------


class TokenBatch:
    """vlkit's token dict behind the ``.to(device)`` CLIP_benchmark calls on tokenizer output."""

    def __init__(self, tokens: dict[str, torch.Tensor]):
        self.tokens = tokens

    def to(self, device) -> "TokenBatch":
        return TokenBatch({k: v.to(device) for k, v in self.tokens.items()})


class OpenClipStyle(torch.nn.Module):
    """A vlkit DualEncoder with the two methods CLIP_benchmark calls (it normalises itself)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images, normalize=False)

    def encode_text(self, tokens: TokenBatch) -> torch.Tensor:
        return self.model.encode_text(tokens.tokens, normalize=False)


def build_models(spec: str, workdir: Path):
    """(vlkit model, CLIP_benchmark model, its tokenizer, how the CLIP_benchmark side was built)."""
    import vlkit.models

    if spec.startswith("openclip:") and "@" not in spec:
        import open_clip

        arch = spec.split(":", 1)[1]
        torch.manual_seed(0)
        native = open_clip.create_model(arch, pretrained=None).eval()  # random init
        weights = workdir / f"{arch}-random.pt"
        torch.save(native.state_dict(), weights)
        model = vlkit.models.load(f"openclip:{arch}@{weights}").eval()
        return model, native, open_clip.get_tokenizer(arch), f"open_clip's own {arch} module (same weights file)"
    model = vlkit.models.load(spec).eval()
    return model, OpenClipStyle(model), lambda texts: TokenBatch(model.tokenize(list(texts))), "a thin wrapper"


# -- the data, as CLIP_benchmark expects it -------------------------------------------------------


class ClassificationSet(Dataset):
    """(image tensor, label); ``classes`` is read by CLIP_benchmark (acc5 only with 5+ classes)."""

    def __init__(self, ds, transform):
        self.ds, self.transform, self.classes = ds, transform, list(ds.classnames)
        self.targets = ds.targets

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.transform(self.ds[i].image), int(self.targets[i])


class RetrievalSet(Dataset):
    """(image tensor, list of captions): every caption of an image is a positive for it."""

    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        sample = self.ds[i]
        return self.transform(sample.image), list(sample.captions)


def retrieval_collate(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]  # (B, 3, H, W), B lists


# -- one timed evaluation per side -----------------------------------------------------------------


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def vlkit_sides(model, ds, suite: str, workdir: Path, round_index: int):
    """{side: (seconds, metrics)} for vlkit without cache, cold cache, and warm (disk) cache."""
    from vlkit.data.cache import FeatureCache
    from vlkit.evaluate import run

    root = workdir / f"features-{suite}-{round_index}"  # a fresh cache directory per round
    out = {}

    def no_cache():
        out["vlkit, no feature cache"] = timed(lambda: run(model, {"test": ds}, [suite], cache=False, batch_size=BATCH))

    def cold_then_cached():
        out["vlkit, first run (cold cache)"] = timed(
            lambda: run(model, {"test": ds}, [suite], cache=FeatureCache(root), batch_size=BATCH))
        # a new FeatureCache object: nothing in memory, the features come from disk, as in a new process
        out["vlkit, cached run (disk)"] = timed(
            lambda: run(model, {"test": ds}, [suite], cache=FeatureCache(root), batch_size=BATCH))

    for step in (no_cache, cold_then_cached) if round_index % 2 == 0 else (cold_then_cached, no_cache):
        step()
    out = {side: out[side] for side in sorted(out, key=SIDES.index)}
    return {side: (sec, {k.split("/", 1)[1]: v for k, v in res["metrics"].items()}) for side, (sec, res) in out.items()}


def clip_benchmark_classification(zsc, cb_model, tokenizer, ds, transform):
    loader = DataLoader(ClassificationSet(ds, transform), batch_size=BATCH, shuffle=False, num_workers=0)
    templates = [t.replace("{}", "{c}") for t in (ds.templates or ["a photo of a {}."])]
    return timed(lambda: zsc.evaluate(cb_model, loader, tokenizer, list(ds.classnames), templates, "cpu", amp=False))


def clip_benchmark_retrieval(zsr, cb_model, tokenizer, ds, transform):
    loader = DataLoader(RetrievalSet(ds, transform), batch_size=BATCH, shuffle=False, num_workers=0,
                        collate_fn=retrieval_collate)
    return timed(lambda: zsr.evaluate(cb_model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10]))


def rounds(task: str, n_rounds: int, cb_call, vlkit_call) -> dict[str, list]:
    """Interleave the sides, alternating who goes first; {side: [(seconds, metrics), ...]}."""
    runs: dict[str, list] = {}
    for r in range(n_rounds):
        order = [("CLIP_benchmark", cb_call), ("vlkit", vlkit_call)]
        for name, call in order if r % 2 == 0 else order[::-1]:
            result = call(r)
            for side, value in (result.items() if name == "vlkit" else [(name, result)]):
                runs.setdefault(side, []).append(value)
        print(f"  {task}: round {r + 1}/{n_rounds} done", file=sys.stderr, flush=True)
    return runs


# -- printing ------------------------------------------------------------------------------------


def print_speed(task: str, n_images: int, runs: dict[str, list]) -> dict[str, float]:
    base = statistics.median(s for s, _ in runs["CLIP_benchmark"])
    print(f"\n{task}: {n_images} images, median of {len(runs['CLIP_benchmark'])} interleaved rounds")
    print(f"  {'side':<32} {'seconds':>8} {'images/s':>9} {'ratio vs CLIP_benchmark':>24}")
    ratios = {}
    for side, values in runs.items():
        sec = statistics.median(s for s, _ in values)
        ratios[side] = base / sec
        print(f"  {side:<32} {sec:>8.3f} {n_images / sec:>9.1f} {ratios[side]:>24.2f}")
    return ratios


def compare(task: str, vlkit_metrics: dict, cb_metrics: dict, names: list[str]) -> list[str]:
    """Print both numbers per metric; return the names that differ by more than TOLERANCE."""
    print(f"  {'metric':<28} {'vlkit':>12} {'CLIP_benchmark':>15} {'|diff|':>9}")
    bad = []
    for name in names:
        a, b = float(vlkit_metrics[name]), float(cb_metrics[name])
        diff = abs(a - b) if a == a and b == b else (0.0 if a != a and b != b else float("inf"))
        ok = diff <= TOLERANCE
        bad += [] if ok else [f"{task}/{name}"]
        print(f"  {name:<28} {a:>12.6f} {b:>15.6f} {diff:>9.1e} {'same' if ok else 'DIFFERENT'}")
    return bad


def unstable(task: str, runs: dict[str, list]) -> list[str]:
    """Sides whose metrics change between runs: the cache must not change a number."""
    reference = runs["vlkit, no feature cache"][0][1]
    return [f"{task}: {side}" for side, values in runs.items() for _, m in values
            if side.startswith("vlkit") and any(abs(m[k] - reference[k]) > TOLERANCE for k in reference
                                                if m[k] == m[k])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="preset:tiny-clip", help="vlkit model spec (default: preset:tiny-clip)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per task (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default: 1)")
    args = p.parse_args(argv)
    peers.require("benchmarks/eval_throughput.py", "CLIP_benchmark", peers.CLIP_BENCHMARK)
    zsc, zsr = clip_benchmark_metrics()
    torch.set_num_threads(args.threads)
    import vlkit.data

    with tempfile.TemporaryDirectory(prefix="vlkit-eval-bench-") as tmp:
        workdir = Path(tmp)  # feature caches (fresh per round) and the openclip weights file
        model, cb_model, tokenizer, how = build_models(args.model, workdir)
        transform = model.preprocess(train=False)
        digits, moji = vlkit.data.load("digits", "test"), vlkit.data.load("openmoji", "test")
        n_captions = sum(len(moji.captions_at(i)) for i in range(len(moji)))
        print(f"model {args.model} (CLIP_benchmark gets {how}); {args.threads} torch thread(s); "
              f"batch size {BATCH}; fp32; torch {torch.__version__}")
        with torch.no_grad():
            cls = rounds("classification", args.rounds,
                         lambda r: clip_benchmark_classification(zsc, cb_model, tokenizer, digits, transform),
                         lambda r: vlkit_sides(model, digits, "zeroshot", workdir, r))
            ret = rounds("retrieval", args.rounds,
                         lambda r: clip_benchmark_retrieval(zsr, cb_model, tokenizer, moji, transform),
                         lambda r: vlkit_sides(model, moji, "retrieval", workdir, r))
    print_speed(f"zero-shot classification, digits test ({len(digits.classnames)} classes, "
                f"{len(digits.templates or [])} templates)", len(digits), cls)
    bad = compare("classification", cls["vlkit, no feature cache"][0][1], cls["CLIP_benchmark"][0][1],
                  ["acc1", "acc5", "mean_per_class_recall"])
    print_speed(f"retrieval, openmoji test ({n_captions} captions)", len(moji), ret)
    ks = [f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)]
    bad += compare("retrieval", ret["vlkit, no feature cache"][0][1], ret["CLIP_benchmark"][0][1], ks)
    bad += unstable("classification", cls) + unstable("retrieval", ret)
    if bad:
        print(f"\nmetrics that differ by more than {TOLERANCE:g}: {', '.join(bad)}")
        return 1
    print(f"\nall metrics agree within {TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
