"""The dataset registry and :func:`load`, the one entry point for getting data.

A registry entry is a loader function plus what ``vlkit data list`` shows: description,
views, splits and the typed options the loader accepts. Options are a dataclass per dataset,
so an unknown or mistyped option fails with the list of valid ones (``vlkit.config.build``).

Addressing (one string, so the CLI can pass it as ``--data SPEC``):

- ``NAME`` or ``NAME:VIEW``: ``openmoji``, ``openmoji:subgroup``, ``shapes:color``.
- ``NAME=PATH`` or ``NAME:VIEW=PATH`` for datasets read from disk:
  ``imagefolder=/data/pets``, ``captions=/data/train.csv``, ``webdataset:label=/d/s-{000..009}.tar``.
  Everything after the first ``=`` is the path, so paths may hold ``:`` and ``=``.
- Options after ``@`` (:func:`vlkit.grammar.split_data_spec`, the CLI's one form):
  ``openmoji:subgroup@skin_tones=false,glyph_scale=0.5``.
- Keyword options go to :func:`load` (``load("shapes", max_objects=2)``); a view, path or
  option given both in the spec and as a keyword must agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .. import config
from ..errors import UserError
from ..grammar import merge_data_options
from ..registry import Registry
from .dataset import View, VLDataset

CLASSES_DIR = Path(__file__).parent / "classes"


@dataclass
class DatasetEntry:
    """What the registry knows about a dataset before building it."""

    name: str
    loader: Callable[..., VLDataset]  # loader(split, options) -> VLDataset
    options: type  # dataclass of the loader's options
    description: str
    views: tuple[str, ...]
    splits: tuple[str, ...]
    default_view: str | None = None
    needs_path: bool = False


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def read_classes(name: str) -> dict:
    """The data file ``classes/<name>.yaml``: description, class names and templates per view."""
    path = CLASSES_DIR / f"{name}.yaml"
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def view_from_file(spec: dict, classnames: list[str] | None = None) -> View:
    """A :class:`View` from one ``views:`` entry of a classes file (class names may be given)."""
    names = classnames if classnames is not None else spec.get("classnames")
    templates = spec.get("templates")
    return View(
        classnames=tuple(names) if names is not None else None,
        templates=tuple(templates) if templates is not None else None,
        description=spec.get("description", ""),
        flip_safe=bool(spec.get("flip_safe", True)),
    )


def register_dataset(
    name: str,
    options: type,
    views: tuple[str, ...],
    splits: tuple[str, ...],
    default_view: str | None = None,
    description: str | None = None,
    needs_path: bool = False,
) -> Callable:
    """Decorator: register ``loader(split, options) -> VLDataset`` under ``name``.

    The description defaults to the ``description`` field of ``classes/<name>.yaml``.
    """

    def deco(fn: Callable[..., VLDataset]) -> Callable[..., VLDataset]:
        desc = description if description is not None else read_classes(name).get("description", "")
        entry = DatasetEntry(name, fn, options, desc.strip(), views, splits, default_view, needs_path)
        DATASETS.add(name, entry)
        return fn

    return deco


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``"NAME[:VIEW][=PATH]"`` -> (name, view, path)."""
    spec = str(spec).strip()
    head, sep, path = spec.partition("=")
    name, _, view = head.partition(":")
    name, view = name.strip(), view.strip() or None
    if not name:
        raise UserError(f"dataset spec {spec!r} has no name; write e.g. openmoji:subgroup or imagefolder=/dir")
    if sep and not path.strip():
        raise UserError(f"dataset spec {spec!r} has an empty path after '='; write {name}=/path/to/data")
    return name, view, (path.strip() if sep else None)


def load(name: str, split: str = "train", view: str | None = None, **options: Any) -> VLDataset:
    """Build or read dataset ``name`` (see the module docstring for the spec) and return a split.

    ``view=None`` uses the spec's view, else the dataset's default view.
    """
    name, options = merge_data_options(name, options)
    ds_name, spec_view, spec_path = parse_spec(name)
    entry = DATASETS.get(ds_name)
    if spec_view and view and spec_view != view:
        raise UserError(f"view given twice ({spec_view!r} in {name!r} and view={view!r}); give it once")
    if spec_path is not None:
        if options.get("path") not in (None, spec_path):
            raise UserError(f"path given twice ({spec_path!r} and path={options['path']!r}); give it once")
        options["path"] = spec_path
    if entry.needs_path and not options.get("path"):
        raise UserError(f"dataset {ds_name!r} reads files: give a path, e.g. {ds_name}=/path/to/data")
    opts = config.build(entry.options, options, prefix=f"{ds_name}.")
    if split not in entry.splits and not entry.needs_path:
        raise UserError(f"dataset {ds_name!r} has no split {split!r}; valid: {', '.join(entry.splits)}")
    ds = entry.loader(split, opts)
    chosen = view or spec_view or entry.default_view or ds.view
    if chosen is not None and chosen not in ds.views:
        raise UserError(
            f"dataset {ds_name!r} has no view {chosen!r}; valid: {', '.join(sorted(ds.views)) or 'none'}"
        )
    return ds.with_view(chosen) if chosen != ds.view else ds


def describe(name: str) -> dict:
    """Registry facts about one dataset (for ``vlkit data list``), without building it."""
    e = DATASETS.get(name)
    return {
        "name": e.name,
        "description": e.description,
        "views": list(e.views),
        "default_view": e.default_view,
        "splits": list(e.splits),
        "needs_path": e.needs_path,
        "options": {f.name: _default(f) for f in dataclasses.fields(e.options)},
    }


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def list_datasets() -> list[dict]:
    """:func:`describe` for every registered dataset, sorted by name (``vlkit data list``)."""
    return [describe(name) for name in DATASETS.names()]
