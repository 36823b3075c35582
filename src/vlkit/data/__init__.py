"""vlkit's data layer: embedded datasets, user formats, splits, transforms, batches, caches.

Get data with :func:`load` (contract in docs/architecture.md, "Data")::

    from vlkit import data
    ds = data.load("openmoji", split="train")            # default view: concept
    ds = data.load("openmoji:subgroup", split="test")    # NAME:VIEW
    ds = data.load("shapes", split="test", max_objects=2)
    ds = data.load("imagefolder=/data/pets", split="all")  # NAME=PATH (user formats)
    ds = data.load("captions", path="/data/{split}.csv")   # or path=...; {split} is filled

A spec string is ``NAME[:VIEW][=PATH]``; the CLI writes it as ``--data openmoji:group`` or
``--data imagefolder=/path/to/dir``. Everything after the first ``=`` is the path.

Embedded (built offline at first use, cached under ``$VLKIT_CACHE/data`` with a sha256
manifest, rebuilt when damaged): ``openmoji`` (views concept/subgroup/group), ``shapes``
(shape/color/size/count), ``digits`` (digit). User formats: ``imagefolder``, ``captions``
(CSV/TSV/JSONL), ``webdataset`` (tar shards); options ``strict`` (raise on an unreadable
image instead of skipping and counting it) and ``check_images``.

A user source without train/val/test separation (a bare folder of classes, one CSV, shards
without ``{split}``) gives all its samples to any split, with a warning; ``split="all"`` asks
for that explicitly.

Few-shot and base/new splits: :func:`fewshot_indices`, :func:`fewshot_splits`,
:func:`base_new_split`, :func:`select_classes`. Batches: :mod:`vlkit.data.collate`,
:func:`vlkit.data.loader.make_loader`. Transforms: :mod:`vlkit.data.transforms`. Features:
:class:`vlkit.data.cache.FeatureCache`. Looking: :func:`vlkit.data.show.contact_sheet`.
Writing: :func:`vlkit.data.export.export`. torch is imported only by those last modules.
"""

from . import clipbench, coop, digits, openmoji, shapes, userformats, webdataset  # noqa: F401  (fill the registry)
from .catalog import DATASETS, DatasetEntry, describe, list_datasets, load, parse_spec
from .dataset import Sample, View, VLDataset
from .splits import base_new_split, fewshot_indices, fewshot_splits, select_classes

__all__ = [
    "DATASETS", "DatasetEntry", "Sample", "VLDataset", "View", "base_new_split", "describe",
    "fewshot_indices", "fewshot_splits", "list_datasets", "load", "parse_spec", "select_classes",
]
