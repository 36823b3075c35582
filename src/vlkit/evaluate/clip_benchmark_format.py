"""CLIP_benchmark's result files, written beside vlkit's own ``metrics.json``.

CLIP_benchmark (LAION-AI/CLIP_benchmark, ``clip_benchmark eval``) dumps one JSON per
(dataset, model, pretrained, language, task)::

    {"dataset": ..., "model": ..., "pretrained": ..., "task": ..., "metrics": {...}, "language": ...}

and ``clip_benchmark build FILES_OR_DIRS`` turns a set of them into one CSV (a row per file:
the metrics flattened, plus ``model_fullname = model + " " + pretrained``). vlkit's
``metrics.json`` keeps its own shape (flat ``suite/metric`` keys, a ``model`` description that
is a mapping), which other code reads; so each evaluation also writes
``clip_benchmark/{dataset}_{pretrained}_{model}_{language}_{task}.json`` (CLIP_benchmark's
default file name), one per suite, and ``clip_benchmark build RUN/clip_benchmark`` aggregates
vlkit runs beside CLIP_benchmark's own.

Fields: ``task`` is CLIP_benchmark's name where the suite has one (zeroshot ->
zeroshot_classification, retrieval -> zeroshot_retrieval, linear_probe -> linear_probe, whose
metrics get CLIP_benchmark's ``lp_`` prefix), else the suite's name; ``model`` / ``pretrained``
are the architecture and tag of ``openclip:ARCH@TAG`` (a checkpoint file by its base name, as
CLIP_benchmark does), else the model spec (the config's source, or the model's class for a
model given as an object) and the model's fingerprint (which weights); ``dataset``
is vlkit's data spec; ``language`` is ``en`` (vlkit's class names and templates are English).
Two extra fields, ``suite`` and ``fingerprint``, say where a row came from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FOLDER = "clip_benchmark"
TASKS = {"zeroshot": "zeroshot_classification", "retrieval": "zeroshot_retrieval", "linear_probe": "linear_probe"}
LP_PREFIXED = ("acc1", "acc5", "mean_per_class_recall")  # CLIP_benchmark's linear probe: lp_acc1, ...
LANGUAGE = "en"


def model_names(spec: str | None, fingerprint: str | None) -> tuple[str, str]:
    """(model, pretrained) as CLIP_benchmark names them."""
    spec = str(spec or "vlkit-model")
    if spec.startswith("openclip:"):
        arch, _, tag = spec[len("openclip:"):].partition("@")
        return arch, (Path(tag).name if tag else "random-init")
    return spec, str(fingerprint or "")


def records(results: dict, model_spec: str | None = None) -> list[dict]:
    """One CLIP_benchmark record per suite of a vlkit results dict."""
    info = results.get("model") or {}
    spec = model_spec or _source(info.get("config")) or info.get("class")
    model, pretrained = model_names(spec, info.get("fingerprint"))
    data = results.get("data") or {}
    dataset = str(data.get("spec") or data.get("name") or "")
    by_suite: dict[str, dict] = {}
    for key, value in results.get("metrics", {}).items():
        suite, _, metric = key.partition("/")
        if suite == "linear_probe" and metric in LP_PREFIXED:
            metric = f"lp_{metric}"
        by_suite.setdefault(suite, {})[metric] = value
    return [{"dataset": dataset, "model": model, "pretrained": pretrained, "task": TASKS.get(suite, suite),
             "metrics": metrics, "language": LANGUAGE, "suite": suite, "fingerprint": info.get("fingerprint")}
            for suite, metrics in by_suite.items()]


def _source(config) -> str | None:
    source = config.get("source") if isinstance(config, dict) else None
    if isinstance(source, dict):
        return source.get("spec")
    return source if isinstance(source, str) else None


def file_name(record: dict) -> str:
    """CLIP_benchmark's default ``{dataset}_{pretrained}_{model}_{language}_{task}.json``, made a safe name."""
    parts = [record[k] for k in ("dataset", "pretrained", "model", "language", "task")]
    return re.sub(r"[^A-Za-z0-9._@+=-]+", "_", "_".join(str(p) for p in parts)).strip("_")[:200] + ".json"


def write(results: dict, out_dir: str | Path, model_spec: str | None = None, jsonable=lambda v: v) -> list[Path]:
    """Write the records under ``out_dir/clip_benchmark/`` (each file atomically); drop the records
    an earlier evaluation into the same folder left there."""
    from ..engine.checkpoint import atomic_write

    folder = Path(out_dir) / FOLDER
    written = []
    for record in records(results, model_spec):
        text = json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n"
        written.append(atomic_write(folder / file_name(record), lambda f, t=text: f.write(t.encode("utf-8")),
                                    what="CLIP_benchmark result"))
    for stale in folder.glob("*.json"):
        if stale not in written:
            stale.unlink()
    return written
