"""What the runner hands an evaluator: lazily computed, memoised inputs.

An evaluator asks for exactly what it needs, e.g. ``ctx.image_features("test")``,
``ctx.labels("test")``, ``ctx.classnames("test")``, ``ctx.encode_text(prompts)``,
``ctx.meta("test")``.
Nothing is computed before it is asked for, and nothing is computed twice: image features
of a split are encoded once (through the feature cache, :class:`vlkit.data.cache.FeatureCache`,
when it exists) and shared by every suite of a run; each distinct text is encoded once
(a model context also keeps text features in the feature cache, so a later run reuses them).

Two sources fill a context:

- :meth:`EvalContext.from_model` (what :func:`vlkit.evaluate.run` uses): a dual encoder
  (``encode_image``, ``encode_text``, ``preprocess``, ``fingerprint``) and data given as a
  dataset spec (``"shapes:color"``, loaded per split with :func:`vlkit.data.load`), a
  ``{split: VLDataset}`` mapping, or one VLDataset (only its own split is available).
- :meth:`EvalContext.from_arrays`: precomputed features, labels, logits, metadata and a text
  function, for users who only have tensors, and for tests.

Image and text features are always returned L2-normalised, float32, on the CPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import kshot_indices, require_finite

DEFAULT_TEMPLATES = ["a photo of a {}."]  # CLIP's plain prompt, used when a view has no templates


class EvalContext:
    """Memoised access to one model's view of one dataset; subclasses provide the raw values."""

    source = "unknown"

    def __init__(self, seed: int = 0, logit_scale: float | None = None, text_batch_size: int = 256):
        self.seed = int(seed)
        self.suite: str | None = None  # set by the runner so errors can name the suite
        self.text_batch_size = text_batch_size
        self._logit_scale = logit_scale
        self._memo: dict[Any, Any] = {}
        self._text_rows: dict[str, torch.Tensor] = {}

    # -- constructors ---------------------------------------------------------------------------
    @staticmethod
    def from_model(model, data, **kwargs) -> "EvalContext":
        from .sources import ModelContext

        return ModelContext(model, data, **kwargs)

    @staticmethod
    def from_arrays(**kwargs) -> "EvalContext":
        from .sources import ArrayContext

        return ArrayContext(**kwargs)

    # -- public, memoised -----------------------------------------------------------------------
    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Compute once per context (shared by suites: e.g. the zero-shot classifier)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def has_split(self, split: str) -> bool:
        return self.memo(("has_split", split), lambda: self._has_split(split))

    def dataset(self, split: str):
        return self.memo(("dataset", split), lambda: self._checked_dataset(split))

    def image_features(self, split: str) -> torch.Tensor:
        """(N, D) L2-normalised image features of a split."""

        def compute():
            self._require_split(split)
            feats = self._image_features(split).detach().float().cpu()
            self._require_nonempty(split, len(feats))
            return F.normalize(feats, dim=-1)

        return self.memo(("image_features", split), compute)

    def labels(self, split: str) -> torch.Tensor:
        """(N,) long labels of the current view; UserError when the view has none."""

        def compute():
            self._require_split(split)
            labels = torch.as_tensor(self._labels(split)).long().reshape(-1)
            self._require_nonempty(split, len(labels))
            if (labels < 0).any():
                raise UserError(
                    f"{self._who()}split {split!r} of {self.data_name} has no labels in view "
                    f"{self.view!r}; pick a labelled view, e.g. '{self.data_name}:<view>'"
                )
            return labels

        return self.memo(("labels", split), compute)

    def captions(self, split: str) -> list[list[str]]:
        """Captions of every sample (each a non-empty list)."""

        def compute():
            self._require_split(split)
            caps = [list(c) for c in self._captions(split)]
            self._require_nonempty(split, len(caps))
            return caps

        return self.memo(("captions", split), compute)

    def meta(self, split: str) -> list[dict]:
        def compute():
            self._require_split(split)
            meta = [dict(m) for m in self._meta(split)]
            self._require_nonempty(split, len(meta))
            return meta

        return self.memo(("meta", split), compute)

    def logits(self, split: str) -> torch.Tensor | None:
        """Class logits given by the source (array contexts), or None: evaluators then build
        zero-shot logits themselves (:func:`vlkit.evaluate.zeroshot.class_logits`)."""
        return self.memo(("logits", split), lambda: self._given_logits(split))

    def fewshot(self, split: str, shots: int, within: torch.Tensor | None = None) -> torch.Tensor:
        """Positions in ``split`` of up to ``shots`` samples per class, drawn with the context's
        seed from ``within`` (positions; default: the whole split)."""
        labels = self.labels(split)
        within = torch.arange(len(labels)) if within is None else torch.as_tensor(within).long()
        return within[self._fewshot(split, shots, within)].sort().values

    def _fewshot(self, split: str, shots: int, within: torch.Tensor) -> torch.Tensor:
        return kshot_indices(self.labels(split)[within], shots, self.seed)

    def classnames(self, split: str) -> list[str]:
        """Class names of the view in ``split`` (per split: some views, like OpenMoji's
        ``concept``, name only the classes of their own split); UserError when there are none."""
        names = self._classnames(split)
        if not names:
            raise UserError(
                f"{self._who()}{self.data_name} (view {self.view!r}) has no class names; "
                f"pick a labelled view, e.g. '{self.data_name}:<view>', or run retrieval instead"
            )
        return list(names)

    def has_classnames(self, split: str) -> bool:
        return bool(self._classnames(split))

    def templates(self, split: str) -> list[str]:
        """Prompt templates (with ``{}``) of the view; CLIP's "a photo of a {}." when it has none."""
        return list(self._templates(split) or DEFAULT_TEMPLATES)

    @property
    def logit_scale(self) -> float:
        """The model's softmax scale (exp of its log-space ``logit_scale``), else CLIP's 100;
        a NaN or infinite scale is refused (:meth:`_finite`)."""
        return float(self._finite(self._scale(), "a logit_scale"))

    def _scale(self) -> float:
        """The scale unchecked: for describing the model in metrics.json, not for scoring."""
        return float(self._logit_scale) if self._logit_scale is not None else 100.0

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) L2-normalised text features; each distinct text is encoded once per context."""
        texts = [str(t) for t in texts]
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_rows))
        from ..engine.progress import Progress

        shown = Progress(len(missing), "encoding texts", unit="text", leave=False,
                         enabled=self.progress and len(missing) > self.text_batch_size)  # more than one chunk
        with shown:
            for start in range(0, len(missing), self.text_batch_size):
                chunk = missing[start : start + self.text_batch_size]
                rows = F.normalize(self._encode_text(chunk).detach().float().cpu(), dim=-1)  # (n, D)
                if rows.shape[0] != len(chunk):
                    raise RuntimeError(f"text encoder returned {rows.shape[0]} rows for {len(chunk)} texts")
                self._text_rows.update(zip(chunk, rows))
                shown.update(len(chunk))
        if not texts:
            return torch.empty(0, 0)
        return torch.stack([self._text_rows[t] for t in texts])

    def restyled(self, **data_options: Any) -> "EvalContext":
        """The same model on the same dataset spec loaded with other options (``style=edges``):
        the style-shift suite's view of a shifted style. Only a model with a dataset spec has one."""
        raise UserError(f"{self._who()}needs a model and a dataset spec whose options it can change "
                        f"(e.g. vlkit eval --data openmoji:concept); precomputed features have no other styles")

    @contextmanager
    def for_suite(self, name: str) -> Iterator["EvalContext"]:
        """Errors raised inside name the suite that asked (``zeroshot: ...``)."""
        previous, self.suite = self.suite, name
        try:
            yield self
        finally:
            self.suite = previous

    def describe(self) -> dict:
        """What went in, for metrics.json: data name, view and the splits actually used."""
        return {"name": self.data_name, "view": self.view, "source": self.source}

    # -- shared checks --------------------------------------------------------------------------
    progress = False  # show encoding progress (ModelContext: evaluate.run's progress=)
    data_name = "data"
    view: str | None = None

    def _who(self) -> str:
        return f"{self.suite}: " if self.suite else ""

    def _finite(self, values, what: str) -> torch.Tensor:
        """``values`` as a tensor if all finite, else one line naming the suite and the model
        (:func:`~vlkit.evaluate.base.require_finite`); the sources call it on all they hand out."""
        return require_finite(values, what, self._model_label, self.suite)

    def _model_label(self) -> str:
        """How an error names the model (built only for the error)."""
        return "(unnamed)"

    def _checked_dataset(self, split: str):
        self._require_split(split)
        ds = self._dataset(split)
        self._require_nonempty(split, len(ds))
        return ds

    def _require_split(self, split: str) -> None:
        if not self.has_split(split):
            raise UserError(
                f"{self._who()}{self.data_name} has no split {split!r}; "
                f"available: {', '.join(self._split_names()) or 'none'}; set the suite's split option"
            )

    def _require_nonempty(self, split: str, n: int) -> None:
        if n == 0:
            raise UserError(
                f"{self._who()}split {split!r} of {self.data_name} is empty; "
                "evaluate on a split with samples (check filters and subset options)"
            )

    def _missing_tower(self, tower: str) -> UserError:
        need = "text" if tower == "text" else "image"
        alt = "linear_probe" if tower == "text" else "no image-free suite"
        return UserError(
            f"{self._who()}the model has no {need} tower, and this suite encodes {need}s; "
            f"load a dual encoder with both towers (suites without text: {alt})"
        )

    # -- hooks for sources ----------------------------------------------------------------------
    def _split_names(self) -> list[str]:
        return []

    def _has_split(self, split: str) -> bool:
        return split in self._split_names()

    def _dataset(self, split: str):
        raise UserError(f"{self._who()}this suite needs dataset objects; build the context from a model and data")

    def _image_features(self, split: str) -> torch.Tensor:
        raise NotImplementedError

    def _labels(self, split: str):
        raise NotImplementedError

    def _captions(self, split: str) -> list[list[str]]:
        raise NotImplementedError

    def _meta(self, split: str) -> list[dict]:
        raise NotImplementedError

    def _given_logits(self, split: str) -> torch.Tensor | None:
        return None

    def _classnames(self, split: str) -> list[str] | None:
        return None

    def _templates(self, split: str) -> list[str] | None:
        return None

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        raise self._missing_tower("text")


def as_split_dict(value: Any, what: str) -> dict[str, Any]:
    """Accept ``{split: value}``; a bare value means the ``test`` split."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {"test": value}
