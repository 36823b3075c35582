"""What a report is made from: the files of a run directory, and the images of its dataset.

A run directory holds ``metrics.json`` (always: the report refuses to guess without it),
``artifacts.json`` (the evaluators' side channel: per-class accuracy, reliability bins,
conformal curves, retrieval examples, ...) and, for a training run, ``metrics.jsonl`` (one
line per logged step). Older or hand-made runs may lack the last two; the report then simply
has fewer sections.

Images are needed only to draw retrieval examples (artifacts keep image *indices*, not
pixels). :class:`SplitImages` finds the evaluated split again from what the caller passes (a
dataset, a ``{split: dataset}`` mapping, a spec string) or from the spec recorded in
``metrics.json``, and checks the dataset's fingerprint against the recorded one, so a report
never shows images of a different dataset under the evaluated queries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import UserError, missing_file

OPENMOJI_CREDIT = "Emoji images: OpenMoji (openmoji.org), CC BY-SA 4.0"


@dataclass
class RunFiles:
    """The parsed files of one run directory."""

    out_dir: Path
    results: dict  # metrics.json
    artifacts: dict = field(default_factory=dict)  # artifacts.json, {suite: {...}}
    history: list[dict] = field(default_factory=list)  # metrics.jsonl rows (training runs)

    @property
    def data(self) -> dict:
        return self.results.get("data") or {}

    @property
    def data_name(self) -> str:
        name = self.data.get("name") or self.data.get("spec") or ""
        return str(name).split(":")[0].split("=")[0]

    @property
    def shows_openmoji(self) -> bool:
        """True when the evaluated data is OpenMoji: its images need the CC BY-SA credit."""
        return self.data_name == "openmoji"


def read_run(out_dir: str | Path) -> RunFiles:
    """Read ``metrics.json``, ``artifacts.json`` and ``metrics.jsonl`` from a run directory."""
    out = Path(out_dir)
    if not out.is_dir():
        raise missing_file(out, "run directory", "give the --out directory of `vlkit eval` or a training run")
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(
            f"no metrics.json in {out}; evaluate first (`vlkit eval ... --out {out}` or "
            "vlkit.evaluate.run(..., out_dir=...))"
        )
    results = _read_json(metrics_path)
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
        raise UserError(f"{metrics_path} has no 'metrics' mapping; it was not written by vlkit.evaluate.run")
    artifacts_path = out / "artifacts.json"
    artifacts = _read_json(artifacts_path) if artifacts_path.is_file() else {}
    history = read_history(out / "metrics.jsonl")
    if not history and isinstance(results.get("history"), list):  # a trainer passed its log to run()
        history = [_numeric(r) for r in results["history"] if isinstance(r, dict)]
    return RunFiles(out, results, artifacts if isinstance(artifacts, dict) else {}, history)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON (line {e.lineno}); re-run the evaluation to rewrite it") from None


def read_history(path: Path) -> list[dict]:
    """Rows of a ``metrics.jsonl``; a line cut short by a kill ends the history there.

    The engine writes NaN and infinities as strings ("nan"), so they are turned back into floats.
    """
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(row, dict) and "step" in row:
            rows.append(_numeric(row))
    return rows


def _numeric(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            v = float(v)
        out[k] = v
    return out


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SplitImages:
    """The images of the evaluated splits, found again and checked by fingerprint.

    ``dataset``: a dataset object (used for its own split), a ``{split: dataset}`` mapping, a
    spec string for :func:`vlkit.data.load`, or None (the spec recorded in metrics.json). The
    recorded spec is loaded with the recorded data options, so an evaluation run with options
    shows its images.
    :meth:`get` returns the dataset of a split, or None with the reason in :attr:`notes`.
    """

    def __init__(self, dataset: Any, data_info: Mapping[str, Any]):
        self.dataset = dataset
        self.info = dict(data_info or {})
        self.notes: dict[str, str] = {}
        self._found: dict[str, Any] = {}

    def get(self, split: str):
        if split not in self._found:
            try:
                ds = self._resolve(split)
                self._found[split] = self._checked(ds, split) if ds is not None else None
            except UserError as e:
                self.notes[split] = f"the images could not be loaded ({e})"
                self._found[split] = None
        return self._found[split]

    def _resolve(self, split: str):
        given = self.dataset
        if isinstance(given, Mapping):
            if split in given:
                return given[split]
            self.notes[split] = f"the dataset mapping passed has no split {split!r}"
            return None
        if given is not None and not isinstance(given, (str, Path)):
            own = getattr(given, "split", split)
            if own == split:
                return given
            self.notes[split] = f"the dataset passed is split {own!r}, the examples come from {split!r}"
            return None
        recorded = self.info.get("spec")
        spec = str(given) if given is not None else recorded
        if not spec:
            self.notes[split] = "no dataset spec is recorded; pass dataset= to vlkit.report.write"
            return None
        from .. import data

        # the evaluated data's options (e.g. skin_tones=false) are part of what was evaluated
        options = dict(self.info.get("options") or {}) if spec == recorded else {}
        return data.load(spec, split=split, **options)

    def _checked(self, ds, split: str):
        recorded = ((self.info.get("splits") or {}).get(split) or {}).get("fingerprint")
        fingerprint = getattr(ds, "fingerprint", None)
        actual = fingerprint() if callable(fingerprint) else None
        if recorded and actual and recorded != actual:
            self.notes[split] = (
                f"the dataset found for split {split!r} is not the evaluated one (fingerprint {actual}, "
                f"evaluated {recorded}); pass the evaluated dataset as dataset="
            )
            return None
        return ds
