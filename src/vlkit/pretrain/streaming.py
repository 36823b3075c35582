"""Whether a pretraining run streams its WebDataset shards, and the stream it reads.

``data.stream: true`` streams (:class:`vlkit.data.stream.WebDatasetStream`: no shard is read
before training, any number of ranks and workers), ``false`` indexes the shards as a map-style
dataset (every shard read once at start; frozen towers' features can then be cached). Left
``null``, a ``webdataset`` spec streams when its pattern is a URL or ``pipe:`` command (only a
stream can read those), when ``data.num_samples`` or ``data.resampled`` is set, or when a
``sizes.json`` / ``__len__`` beside local shards gives the epoch size (``vlkit data export
--format webdataset`` writes one) and the ``webdataset`` library is installed.
"""

from __future__ import annotations

import importlib.util

from ..data import parse_spec
from ..errors import UserError
from .config import DataConfig


def wants_stream(data: DataConfig) -> bool:
    name, _, path = parse_spec(data.name)
    if name != "webdataset" or not path:
        if data.stream:
            raise UserError(f"data.stream reads webdataset shards; data.name is {data.name!r}: "
                            "write data.name=webdataset=/path/shards-{000..009}.tar or drop data.stream")
        return False
    if data.stream is not None:
        return bool(data.stream)
    from ..data.files import expand_shards
    from ..data.stream import dataset_size, is_stream_url

    pattern = path.replace("{split}", data.split)
    if is_stream_url(pattern) or data.num_samples is not None or data.resampled:
        return True  # (without the webdataset library the stream says how to install it)
    if importlib.util.find_spec("webdataset") is None:
        return False  # local shards index without it, as before the wds extra existed
    return dataset_size([str(p) for p in expand_shards(pattern)]) is not None


def stream_batches(data: DataConfig, batch_size: int, collate, seed: int, num_workers: int):
    """The engine's batch source over the streamed shards of ``data``."""
    from ..data.stream import WebDatasetStream

    if data.options:
        raise UserError(f"streamed shards take no dataset options (got {sorted(data.options)}); use "
                        "data.num_samples, data.resampled, data.shuffle_buffer, or data.stream=false")
    if data.num_samples is not None and data.num_samples < 1:
        raise UserError(f"data.num_samples must be >= 1 (or null: read sizes.json), got {data.num_samples}")
    if data.shuffle_buffer < 1:
        raise UserError(f"data.shuffle_buffer must be >= 1 (1: no shuffling), got {data.shuffle_buffer}")
    pattern = parse_spec(data.name)[2].replace("{split}", data.split)
    stream = WebDatasetStream(pattern, batch_size, collate, num_samples=data.num_samples, seed=seed,
                              resampled=data.resampled, shuffle_buffer=data.shuffle_buffer,
                              num_workers=num_workers)
    if data.max_samples is not None and data.max_samples < stream.num_samples:
        stream.num_samples = data.max_samples  # shorter epochs (quick runs): max_samples per epoch
    if stream.num_samples < batch_size:
        raise UserError(f"the stream's {stream.num_samples} samples per epoch are fewer than one batch of "
                        f"{batch_size}; lower batch_size or raise data.num_samples")
    return stream
