"""WebDataset shards streamed for pretraining, the way open_clip_train reads them, through the
``webdataset`` library (the ``wds`` extra: ``pip install 'vlkit[wds]'``).

Nothing is scanned up front: shard URLs are expanded from the pattern (``::``-separated lists
and brace ranges ``shards-{000000..000099}.tar``, by ``webdataset.shardlists.expand_urls``),
local files are checked to exist (a ``stat`` each, no read), and the samples per epoch come
from ``num_samples`` (open_clip's ``--train-num-samples``) or, as open_clip's
``get_dataset_size`` reads them, a ``sizes.json`` (``{"shard.tar": n, ...}``) or ``__len__``
file beside the shards. URLs: local paths, ``pipe:COMMAND`` (its stdout is the tar),
``http(s)://`` (through ``curl``), ``gs://`` (``gsutil``) and ``s3://`` (rewritten to
``pipe:aws s3 cp URL -``, as open_clip's README does it).

The pipeline of epoch ``e`` (built afresh each epoch, so every seed is a function of
(seed, e) and not of how many times a worker process was reused):

- without resampling: the shard list in an order drawn from (seed, e), the same on every rank;
  ``webdataset.split_by_node`` gives rank r the shards r, r+W, ... (W ranks, from
  ``RANK``/``WORLD_SIZE`` or the process group) and ``split_by_worker`` deals those among the
  DataLoader workers, so in one epoch every sample is read exactly once across all ranks and
  workers. Ranks and workers should get equal numbers of samples (shards ``>= ranks x workers``,
  a multiple where possible, as open_clip asks); a rank that runs out ends its epoch early.
- ``resampled=True``: each worker of each rank draws shards with replacement
  (``webdataset.ResampledShards``, seeded by (seed, e, rank, worker)): any number of shards
  works with any number of ranks, and an epoch is simply ``num_samples`` samples.

Samples are shuffled within a buffer (``shuffle_buffer``, seeded per (seed, e, rank, worker)),
parsed as :mod:`vlkit.data.webdataset` parses them (``KEY.jpg/png/webp`` + ``KEY.txt`` or
``KEY.json`` captions, optional label), grouped into this rank's share of each global batch
and collated in the worker (:class:`vlkit.data.collate.Collate`). An epoch yields
``num_samples // batch_size`` batches. Resuming at batch ``b`` skips the first ``b`` batches
without decoding their images. A shard that cannot be opened or read stops the run with one
line naming it; an image that does not decode is skipped (open_clip's ``log_and_continue``).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from ..errors import UserError
from .dataset import Sample

SCHEMES = ("pipe", "http", "https", "gs", "s3", "file")
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def _wds():
    try:
        import webdataset
    except ImportError:
        raise UserError("streaming WebDataset shards needs the webdataset library: "
                        "pip install 'vlkit[wds]' (or pip install webdataset)") from None
    return webdataset


def shard_urls(pattern: str) -> list[str]:
    """The shard URLs of a pattern, checked without reading: a known scheme, local files present."""
    wds = _wds()
    urls = [u.strip() for u in wds.shardlists.expand_urls(str(pattern).strip()) if u.strip()]
    if not urls:
        raise UserError(f"webdataset pattern {pattern!r} names no shards; write e.g. /data/shards-{{000..009}}.tar")
    out = []
    for url in urls:
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", url)
        if scheme and len(scheme.group(1)) > 1:  # (a one-letter "scheme" is a Windows drive)
            name = scheme.group(1).lower()
            if name not in SCHEMES:
                raise UserError(f"shard URL {url!r} has the unknown scheme {name!r}; use a path, pipe:COMMAND, "
                                "http(s)://, s3:// or gs://")
            if name == "s3":
                url = f"pipe:aws s3 cp {url} -"
            elif name == "file":
                url = url[len("file://"):] if url.startswith("file://") else url[len("file:"):]
            if name == "pipe" and not url[5:].strip():
                raise UserError(f"shard URL {url!r} has no command after 'pipe:'; write e.g. pipe:cat /data/s-000.tar")
        if not url.startswith("pipe:") and "://" not in url and not Path(url).expanduser().is_file():
            raise UserError(f"webdataset shard not found: {url} (from {pattern!r}); check the pattern")
        out.append(url)
    return out


def dataset_size(urls: list[str]) -> int | None:
    """Samples in the shards from ``sizes.json`` or ``__len__`` beside local shards (open_clip's
    ``get_dataset_size``); None when neither is there or the shards are not local files."""
    local = [u for u in urls if not u.startswith("pipe:") and "://" not in u]
    if len(local) != len(urls) or not urls:
        return None
    folder = Path(urls[0]).expanduser().parent
    sizes, length = folder / "sizes.json", folder / "__len__"
    if sizes.is_file():
        try:
            table = json.loads(sizes.read_text(encoding="utf-8"))
            return sum(int(table[Path(u).name]) for u in urls)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{sizes} does not give the size of every shard ({type(e).__name__}: {e}); "
                            "fix it or pass num_samples") from None
    if length.is_file():
        try:
            return int(length.read_text(encoding="utf-8").strip())
        except ValueError:
            raise UserError(f"{length} does not hold one integer; fix it or pass num_samples") from None
    return None


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def _worker() -> tuple[int, int, int, int]:
    return _wds().utils.pytorch_worker_info()  # (rank, world size, worker, workers)


def _ordered_shards(src: Iterator[dict], seed: int, epoch: int) -> Iterator[dict]:
    """The whole shard list in an order fixed by (seed, epoch): identical on every rank."""
    shards = list(src)
    random.Random(_seed("shards", seed, epoch)).shuffle(shards)
    yield from shards


def _buffer_shuffle(src: Iterator[dict], bufsize: int, seed: int, epoch: int) -> Iterator[dict]:
    if bufsize <= 1:
        yield from src
        return
    rank, _, worker, _ = _worker()
    rng = random.Random(_seed("samples", seed, epoch, rank, worker))
    yield from _wds().shuffle(bufsize, min(bufsize, 100), rng=rng)(src)


def _skip(src: Iterator, start: int) -> Iterator:
    """Drop this worker's share of the first ``start`` loader batches (the loader takes batch b
    from worker b mod n), before any image is decoded."""
    _, _, worker, workers = _worker()
    yield from islice(src, len(range(worker, start, workers)), None)


def _raise_clean(exn: Exception) -> bool:
    """webdataset's handler: a shard that cannot be opened or read is one line naming it (the
    library appends the URL to the exception's args)."""
    args = [a for a in exn.args if a not in ("", None)]
    url = args[-1] if args and isinstance(args[-1], str) else "?"
    first = str(args[0]) if args else type(exn).__name__
    status = re.search(r"exit (\d+)", first)
    reason = (f"the command exited with status {status.group(1)}" if status
              else re.sub(r"\s*(@\s*)?<[^>]*>", "", first).strip() or type(exn).__name__)
    raise UserError(f"cannot read webdataset shard {url}: {' '.join(reason.split())[:200]}; "
                    "check the URL and that the shard is a complete tar") from None


def to_sample(raw: dict) -> Sample | None:
    """A vlkit Sample of one tar sample (None: no image, or one that does not decode)."""
    from .webdataset import _captions, _label

    ext = next((k for k in IMAGE_KEYS if raw.get(k) is not None), None)
    if ext is None:
        return None  # caption-only keys are skipped, as open_clip's filter_no_caption_or_no_image
    where = f"{raw.get('__url__', '?')}:{raw['__key__']}"
    try:
        with Image.open(io.BytesIO(raw[ext])) as im:
            image = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    fields = {k: raw[k] for k in ("txt", "json", "cls") if raw.get(k) is not None}
    captions, info = _captions(fields, where)
    label = _label(fields, info, where)
    index = _seed("index", raw.get("__url__", ""), raw["__key__"]) >> 2  # stable per sample
    return Sample(image=image, captions=captions, label=label if isinstance(label, int) else -1, labels={},
                  meta={"index": index, "key": raw["__key__"], "url": raw.get("__url__", "")})


def _collate_raw(raws: list[dict], collate: Callable):
    samples = [s for s in map(to_sample, raws) if s is not None]
    return collate(samples) if samples else None


class WebDatasetStream:
    """The engine's :class:`~vlkit.engine.batches.BatchSource` over streamed shards; see the
    module docstring. ``batch_size`` is global (each rank collates its share)."""

    def __init__(self, urls: str | list[str], batch_size: int, collate: Callable, *, num_samples: int | None = None,
                 seed: int = 0, resampled: bool = False, shuffle_buffer: int = 1000, num_workers: int = 0):
        self.urls = shard_urls(urls) if isinstance(urls, str) else list(urls)
        self.num_samples = num_samples if num_samples is not None else dataset_size(self.urls)
        if self.num_samples is None:
            raise UserError("streamed shards need the samples per epoch: pass num_samples=N (open_clip's "
                            "--train-num-samples) or put a sizes.json beside the shards")
        if batch_size < 1 or self.num_samples < batch_size:
            raise UserError(f"num_samples {self.num_samples} is less than one batch of {batch_size}; "
                            "lower batch_size or raise num_samples")
        self.batch_size, self.collate, self.seed = batch_size, collate, seed
        self.resampled, self.shuffle_buffer, self.num_workers = resampled, shuffle_buffer, num_workers

    def __len__(self) -> int:
        return self.num_samples // self.batch_size

    def local_batch_size(self) -> int:
        _, world, _, _ = _worker()
        if self.batch_size % world:
            raise UserError(f"batch_size {self.batch_size} does not divide among {world} processes; "
                            f"use a multiple of {world}")
        if not self.resampled and len(self.urls) < world * max(1, self.num_workers):
            raise UserError(f"{len(self.urls)} shards cannot be split among {world} rank(s) x "
                            f"{max(1, self.num_workers)} worker(s); use more shards, fewer workers, or resampled=true")
        return self.batch_size // world

    def pipeline(self, epoch: int, start: int = 0):
        """The ``webdataset.DataPipeline`` of this rank's share of ``epoch``, from batch ``start``:
        collated batches of ``batch_size / ranks`` samples (a worker's last partial one dropped)."""
        wds = _wds()
        if self.resampled:
            stages = [wds.ResampledShards(self.urls, seed=_seed("resample", self.seed, epoch), deterministic=True)]
        else:
            stages = [wds.SimpleShardList(self.urls), partial(_ordered_shards, seed=self.seed, epoch=epoch),
                      wds.split_by_node, wds.split_by_worker]
        stages += [wds.tarfile_to_samples(handler=_raise_clean),
                   partial(_buffer_shuffle, bufsize=self.shuffle_buffer, seed=self.seed, epoch=epoch),
                   wds.batched(self.local_batch_size(), collation_fn=list, partial=False),  # raw: decoded after the skip
                   partial(_skip, start=start), wds.map(partial(_collate_raw, collate=self.collate))]
        return wds.DataPipeline(*stages)

    def batches(self, epoch: int, start: int = 0) -> Iterator:
        import torch

        set_epoch = getattr(self.collate, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        source = self.pipeline(epoch, start)
        if self.num_workers > 0:
            source = torch.utils.data.DataLoader(source, batch_size=None, num_workers=self.num_workers)
        return _clean_errors(islice((b for b in iter(source) if b is not None), len(self) - start))


def _clean_errors(it: Iterator) -> Iterator:
    """Batches of ``it``; a UserError raised in a DataLoader worker comes back as one line."""
    try:
        yield from it
    except UserError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        raise UserError(last.split("UserError: ", 1)[-1] if "Original Traceback" in str(e) else str(e)) from None


def is_stream_url(path: str) -> bool:
    """Whether a shard pattern names remote or piped shards (which only streaming can read)."""
    return bool(re.match(r"^\s*(pipe:|[A-Za-z][A-Za-z0-9+.-]+://)", str(path)))

