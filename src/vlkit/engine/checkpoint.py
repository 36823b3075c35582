"""Checkpoints that survive a crash and load without running pickled code.

Layout: ``<out_dir>/checkpoints/step_00000100.pt`` (the newest is the one to resume from), and
at the end of a run ``<out_dir>/model.safetensors`` (the trained module's weights alone).

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(weights_only=True)``: loading never executes code from the file. That is why the
RNG states are converted (numpy's and Python's Mersenne Twister keys become int64 tensors).
It holds:

- ``model``: ``task.module.state_dict()`` (unwrapped: no DDP ``module.`` prefix);
- ``optimizer``, ``scheduler``, ``scaler``: their ``state_dict()`` (None when absent);
- ``rng``: one entry per rank (torch CPU, CUDA, numpy, Python ``random``), so each rank of a
  resumed DDP run draws the dropout masks it would have drawn;
- ``step``, ``epoch``, ``batch``: the position of the *next* batch to train on;
- ``extra``: ``task.extra_state()`` (e.g. ALBEF's feature queues), ``hooks``: hook states;
- ``config``: the engine config as a plain dict, ``elapsed``: training seconds so far.

Writes are atomic: the bytes go to a temporary file in the same directory, are fsynced, and
``os.replace`` gives them the final name. A crash mid-write leaves the previous checkpoint
intact and nothing under the final name; old checkpoints are pruned only after a new one is
in place. A full disk (ENOSPC) is one line saying how much space the checkpoint needs; the
previous checkpoint stays.

Integrity: each checkpoint has a sidecar ``step_N.pt.sha256`` (``sha256sum`` format, so
``sha256sum -c`` checks it too) with the SHA-256 of the file's bytes, written before the
checkpoint takes its final name. Resuming verifies it: a newest checkpoint whose bytes changed
(or that cannot be read) is moved aside as ``step_N.pt.damaged`` with one warning, and the run
resumes from the previous intact one. A checkpoint without a sidecar (written by an older
vlkit) is read as it is. Temporary files of a killed write (``.step_N.pt.tmp-PID``, whose PID is
no longer running) are removed when a run starts (:func:`clean_temp_files`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError

FORMAT = "vlkit-engine-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


# ----------------------------------------------------------------------------- RNG states
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- files
def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(out_dir) / f"step_{step:08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``out_dir``, oldest first (temporary files are ignored)."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TMP = re.compile(r"^\..+\.tmp-(\d+)$")  # atomic_write's temporary names


def disk_full_error(path: Path, needed: int | None, what: str) -> UserError:
    """The one line for ENOSPC: what could not be written, how much it needs, what is free."""
    from ..cache_admin import format_size

    try:
        st = os.statvfs(path.parent)
        free = format_size(st.f_bavail * st.f_frsize)
    except (OSError, AttributeError):  # no statvfs on Windows
        free = "unknown"
    need = f"needs about {format_size(needed)}" if needed else "needs more space"
    return UserError(f"disk full: could not write {what} {path} ({need}, {free} free); the previous "
                     "file is kept; free some space (or point out_dir elsewhere) and resume")


def atomic_write(path: str | Path, write: Callable[[Any], None], *, what: str = "file",
                 before_replace: Callable[[Path], None] | None = None, expected_size: int = 0) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then rename it over.

    ``before_replace(tmp)`` runs on the complete temporary file just before the rename (the
    checkpoint's checksum is taken there). A full disk is one line (:func:`disk_full_error`,
    needing ``expected_size`` bytes or what was written before the disk filled, the larger)
    and leaves any previous file at ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except OSError as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise disk_full_error(path, max(written, expected_size), what) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksum_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict atomically, with its checksum sidecar (module docstring)."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    previous = latest_checkpoint(path.parent.parent) if path.parent.name == "checkpoints" else None
    expected = previous.stat().st_size if previous is not None else 0  # what a disk-full line says is needed

    def write_checksum(tmp: Path) -> None:
        line = f"{sha256_file(tmp)}  {path.name}\n"
        atomic_write(checksum_path(path), lambda f: f.write(line.encode()), what="checksum of")

    return atomic_write(path, lambda f: torch.save(payload, f), what="checkpoint",
                        before_replace=write_checksum, expected_size=expected)


def verify_checkpoint(path: str | Path) -> str | None:
    """What is wrong with the checkpoint file (None: nothing): its bytes against its sidecar."""
    path = Path(path)
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return None  # written before checksums: read as it is
    try:
        want = sidecar.read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return f"its checksum file {sidecar.name} is unreadable"
    got = sha256_file(path)
    if got != want:
        return f"its bytes changed since it was written (sha256 {got[:12]}..., recorded {want[:12]}...)"
    return None


def clean_temp_files(out_dir: str | Path) -> list[Path]:
    """Remove temporary files that killed writes left in ``out_dir`` and its folders one level
    down (``checkpoints/``, ``model/``): those of a process that is no longer running, and
    checksum files whose checkpoint is gone."""
    from .lock import pid_alive

    out_dir, removed = Path(out_dir), []
    if not out_dir.is_dir():
        return removed
    for folder in (out_dir, *(p for p in out_dir.iterdir() if p.is_dir())):
        for p in folder.iterdir():
            m = _TMP.match(p.name)
            orphan = p.name.endswith(".pt.sha256") and not p.with_name(p.name[:-7]).exists()
            if (m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1)))) or orphan:
                if p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


def save_safetensors(module: nn.Module, path: str | Path) -> Path:
    """The module's weights as safetensors (tied weights stored once), written atomically."""
    from safetensors.torch import save

    tensors, seen = {}, set()
    for name, t in module.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and key in seen:
            continue  # a tied weight: the first name keeps it
        seen.add(key)
        tensors[name] = t.detach().cpu().contiguous()
    data = save(tensors, metadata={"format": "pt"})
    return atomic_write(path, lambda f: f.write(data), what="model weights", expected_size=len(data))


def prune(out_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last <= 0`` keeps all)."""
    if keep_last <= 0:
        return
    for old in list_checkpoints(out_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- loading
def find_resume_checkpoint(out_dir: str | Path, resume: bool | str | Path) -> Path:
    """The checkpoint to resume from: ``resume`` itself when it is a path, else the newest."""
    if not isinstance(resume, bool):
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"checkpoint to resume from not found: {path}; check the path")
        return path
    path = latest_checkpoint(out_dir)
    if path is None:
        raise UserError(
            f"nothing to resume: no checkpoint in {checkpoint_dir(out_dir)}; "
            "start the run without resume, or point out_dir at a run that saved checkpoints"
        )
    return path


def load_resume_checkpoint(out_dir: str | Path, resume: bool | str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from, verified and loaded: ``(path, checkpoint)``.

    With ``resume=True`` a damaged newest checkpoint (changed bytes, unreadable) is moved aside
    as ``*.damaged`` with one warning and the previous one is tried, down to the oldest. A
    checkpoint named by path must be intact: a damaged one is an error.
    """
    first = find_resume_checkpoint(out_dir, resume)
    if not isinstance(resume, bool):
        problem = verify_checkpoint(first)
        if problem:
            raise UserError(f"checkpoint {first} is damaged: {problem}; resume from another checkpoint")
        return first, load_checkpoint(first)
    damaged = []
    for path in reversed(list_checkpoints(out_dir)):
        problem = verify_checkpoint(path)
        ckpt = None
        if problem is None:
            try:
                ckpt = load_checkpoint(path)
            except UserError as e:
                problem = str(e).split("; ")[0].replace(f"checkpoint {path} ", "it ")
        if problem is None:
            return path, ckpt
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        checksum_path(path).unlink(missing_ok=True)
        damaged.append(aside)
        warnings.warn(f"vlkit: checkpoint {path} is damaged: {problem}; moved it to {aside.name} and "
                      "resuming from the previous checkpoint", stacklevel=2)
    raise UserError(f"no intact checkpoint in {checkpoint_dir(out_dir)} ({len(damaged)} damaged, moved to "
                    "*.damaged); start the run again without resume, or in another out_dir")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (never runs code stored in the file)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(
            f"checkpoint {path} cannot be read ({first}); delete it to resume from an older one"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a vlkit engine checkpoint; resume from a file it wrote")
    return ckpt


def check_architecture(module: nn.Module, saved: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse, in one line, a checkpoint whose state dict keys or shapes differ from ``module``."""
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        k = shapes[0]
        more = f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(
            f"{k!r} is {tuple(saved[k].shape)} in the checkpoint but {tuple(own[k].shape)} "
            f"in the model{more}"
        )
    for what, keys in (("missing from the checkpoint", missing), ("not in the model", unexpected)):
        if keys:
            more = f" (+{len(keys) - 1} more)" if len(keys) > 1 else ""
            parts.append(f"{keys[0]!r}{more} {what}")
    raise UserError(
        f"checkpoint {path} is of another architecture: {'; '.join(parts)}; "
        "resume with the model config that wrote it, or start a new run in another out_dir"
    )
