"""What the user formats (imagefolder, captions, webdataset) share: reading bytes lazily,
checking images, splitting, shard patterns, label columns, and the one-line bad-input policy.

Bad input policy:
- an image that cannot be opened is skipped and counted, with one warning line per dataset
  naming the first one (``strict=True``: UserError naming the file instead);
- an empty caption is a UserError naming the file and line (a silent empty text would train
  the model on nothing);
- a caption field is a string (one caption) or a list of strings (several); a label is a class
  index (a non-negative integer) or a class name (a string); anything else is a UserError
  naming the file and line (or shard and key) and the expected type, never read by ``str()``;
- a text file that is not UTF-8 is a UserError naming the file and line;
- a missing file or folder is a UserError naming it.

The check opens each image's header (``PIL.Image.verify``), which is fast and catches
garbage, wrong formats and most truncation; pixels are decoded only when a sample is read.
``check_images=False`` skips even that, and a bad file then fails when it is read.
"""

from __future__ import annotations

import glob
import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import UserError, missing_file
from .dataset import View

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".gif", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


@dataclass
class UserOptions:
    """Options shared by every user format."""

    path: str = ""
    strict: bool = False  # raise on the first unreadable image (or truncated shard) instead of skipping it
    check_images: bool = True  # open each image header at load (skip or raise early)
    templates: list[str] = field(default_factory=list)  # prompt templates; default from classes/
    flip_safe: bool = True  # a horizontal flip keeps the labels (photos); false for text, digits, arrows


class FileReader:
    """Reads one file's bytes; a class, not a lambda, so datasets pickle into DataLoader workers."""

    def __init__(self, path: Path):
        self.path = path if isinstance(path, Path) else Path(path)  # (re-parsing a Path costs: 1.3M images)

    def __call__(self) -> bytes:
        return self.path.read_bytes()


def file_reader(path: Path) -> Callable[[], bytes]:
    return FileReader(path)


def image_ok(read: Callable[[], bytes], name: str, strict: bool) -> bool:
    """True if the bytes open as an image; False (or UserError under ``strict``) if not."""
    try:
        with Image.open(io.BytesIO(read())) as im:
            im.verify()
        return True
    except Exception as e:  # PIL raises many types for bad files; all mean the same here
        if strict:
            raise UserError(f"cannot read image {name} ({type(e).__name__}: {e}); fix or remove it, "
                            "or drop strict=True to skip unreadable images") from None
        return False


def warn_skipped(dataset: str, skipped: Sequence[str]) -> None:
    if skipped:
        warnings.warn(f"vlkit: {dataset}: skipped {len(skipped)} unreadable image(s), first: {skipped[0]}; "
                      "pass strict=True to stop at the first", stacklevel=3)


def check_caption(text: Any, where: str) -> str:
    """A caption as a stripped string; empty or missing is a UserError naming ``where``."""
    text = "" if text is None else str(text).strip()
    if not text:
        raise UserError(f"empty caption at {where}; write a caption there or remove the entry")
    return text


def caption_list(value: Any, where: str, key: str) -> list[str]:
    """A caption field as captions: a string is one caption, a list of strings several; an
    empty or missing one is "empty caption" and any other type a UserError naming ``where``."""
    if value is None or isinstance(value, str):
        return [check_caption(value, where)]
    if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return [check_caption(c, where) for c in value]
    if isinstance(value, list) and not value:
        return [check_caption("", where)]
    raise UserError(f"{key!r} at {where} is {json_kind(value)}; write a caption string or a list of caption strings")


MAX_LABEL = 1_000_000  # a class index this large is a mistake (or an attempt to allocate a huge table)


def check_label(value: Any, where: str) -> int | str | None:
    """A label as a class index (int) or a class name (str); None or "" when absent.

    A dict, a list, true/false, a fraction or a negative number is a UserError naming ``where``
    (read by ``str()`` it would silently become a class of its own).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            return text
        value = int(text) if len(text) <= 18 else MAX_LABEL  # (int() of 4,300+ digits raises)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"label at {where} is {json_kind(value)}; write a class name (a string) "
                        "or a class index (an integer)")
    if not 0 <= value < MAX_LABEL:
        raise UserError(f"label at {where} is {json_kind(value)}, not a class index (0 to {MAX_LABEL - 1}); "
                        "write a non-negative integer or a class name")
    return value


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in a user's words: "a number", "an object (dict)", ..."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, int) and abs(value) >= 10**12:
        return "a huge number"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, dict):
        return "an object (dict)"
    if isinstance(value, list):
        odd = [v for v in value if not isinstance(v, str)][:1]
        return "an empty list" if not value else f"a list holding {json_kind(odd[0])}" if odd else "a list"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 bytes (a byte-order mark allowed) as text; other bytes are a UserError naming
    ``where`` and the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{where} is not UTF-8 text (line {line} holds byte 0x{data[e.start]:02x}); "
                        "save it as UTF-8") from None


def split_folder(root: Path, split: str) -> tuple[Path, bool]:
    """``root/split`` when ``root`` holds train/val/test folders, else ``root`` itself."""
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        return root, False
    if split not in present:
        raise UserError(f"{root} has no {split!r} folder; its splits: {', '.join(present)}")
    return root / split, True


def whole_data_warning(kind: str, path: Any, split: str) -> None:
    if split != "all":
        warnings.warn(f"vlkit: {kind} {path} has no train/val/test separation: split {split!r} gets all of it; "
                      "use split folders or a {split} placeholder in the path to keep test data out of training",
                      stacklevel=3)


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar; ``{x,y}`` lists; nested in order."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    elif "," in body:
        items = body.split(",")
    else:
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [p for it in items for p in expand_braces(head + it + tail)]


def expand_shards(pattern: str) -> list[Path]:
    """Shard files of a brace/glob pattern (or one file, or a folder of .tar files), in order."""
    out: list[Path] = []
    for p in expand_braces(pattern):
        path = Path(p).expanduser()
        if path.is_dir():
            out += sorted(path.glob("*.tar*"))
        elif any(ch in p for ch in "*?["):
            out += sorted(Path(q) for q in glob.glob(str(path)))
        elif path.is_file():
            out.append(path)
        else:
            raise missing_file(path, "webdataset shard")
    if not out:
        raise UserError(f"no webdataset shards match {pattern!r}; "
                        "check the pattern, e.g. /data/shards-{000..009}.tar")
    return out


def label_view(values: Sequence[Any], templates: Sequence[str]) -> tuple[np.ndarray, View] | None:
    """Labels from an optional label column: None when absent; class names when they are names.

    Names become classes in sorted order; integers stay as given (class names then unknown).
    """
    if not values or any(v is None or v == "" for v in values):
        return None
    as_int = [_to_int(v) for v in values]
    if all(i is not None for i in as_int):
        return np.array(as_int), View(None, tuple(templates) or None)
    names = sorted({str(v) for v in values})
    pos = {n: i for i, n in enumerate(names)}
    return np.array([pos[str(v)] for v in values]), View(tuple(names), tuple(templates) or None)


def _to_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
        return int(v)
    return None


def content_hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()


def stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)
