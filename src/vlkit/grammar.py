"""The one command-line grammar of vlkit, written once and used by every subcommand.

- **Options**: trailing dotted ``key=value`` overrides, values read as YAML, anywhere after
  the subcommand::

      vlkit pretrain moji-lit engine.optim.lr=1e-3 engine.steps=200
      vlkit eval preset:tiny-clip --data digits --suite conformal conformal.alpha=0.05
      vlkit adapt --method coop --data digits --model preset:tiny-clip n_ctx=4 coop.lr=0.01

- **Data options**: after the dataset spec, ``NAME[:VIEW][=PATH][@key=value,...]``::

      --data openmoji:subgroup@skin_tones=false,glyph_scale=0.5

  The same string works wherever a dataset is named: ``--data`` of pretrain, eval, adapt and
  ``data show/export``, a recipe's ``data.name`` / ``eval.data``, and :func:`vlkit.data.load`.

- **Device**: ``--device auto|cpu|cuda`` on pretrain, eval and adapt; ``auto`` (the default
  everywhere) takes the GPU when CUDA is there (:func:`vlkit.engine.distributed.pick_device`).

Older forms stay as aliases and print one note naming the new form: eval's
``--option SUITE.KEY=VALUE`` and ``--data-option KEY=VALUE``.

Nothing here imports torch: ``vlkit --help`` builds every parser from this module.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from .config import parse_override
from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")
_OPTION_ITEM = re.compile(r"^\s*[A-Za-z_][\w.]*\s*=")


def split_data_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME[:VIEW][=PATH][@k=v,...]"`` -> (``"NAME[:VIEW][=PATH]"``, ``{k: v}``).

    Values are read as YAML scalars (``false``, ``0.5``, ``[1,2]`` needs quoting by the shell).
    A path may hold ``@`` itself (``imagefolder=/data/a@b``): the options are what follows the
    last ``@`` when that reads as ``key=value``; a spec without a path must use the form.
    """
    spec = str(spec).strip()
    head, sep, tail = spec.rpartition("@")
    if not sep:
        return spec, {}
    if not _OPTION_ITEM.match(tail):
        if "=" in spec.partition("@")[0]:  # NAME=PATH where the path holds '@'
            return spec, {}
        raise UserError(f"dataset option {tail!r} in {spec!r} is not key=value; write e.g. "
                        f"{head.strip() or 'NAME'}@skin_tones=false")
    options = data_options(filter(None, (s.strip() for s in _split_items(tail))), f"{head}@skin_tones=false")
    head = head.strip()
    if not head:
        raise UserError(f"dataset spec {spec!r} has no name before '@'; write e.g. openmoji@skin_tones=false")
    return head, options


def _split_items(text: str) -> list[str]:
    """``"a=1,b=[1,2],c=x"`` -> ``["a=1", "b=[1,2]", "c=x"]`` (commas inside brackets stay)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth <= 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def data_options(items, example: str = "openmoji@skin_tones=false") -> dict[str, Any]:
    """``["skin_tones=false", "glyph_scale=0.5"]`` -> ``{"skin_tones": False, "glyph_scale": 0.5}``."""
    options: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UserError(f"dataset option {item!r} is not key=value; write e.g. {example}")
        path, value = parse_override(item)
        if len(path) != 1:
            raise UserError(f"dataset option {item!r} has a dotted key; dataset options are flat "
                            "(see `vlkit data list`)")
        if path[0] in options and options[path[0]] != value:
            raise UserError(f"dataset option {path[0]!r} given twice; give it once")
        options[path[0]] = value
    return options


def split_specs(text: str) -> list[str]:
    """A comma-separated list of dataset specs, whose options may hold commas too:
    ``"shapes:color@textures=true,max_objects=1,digits"`` -> ``["shapes:color@textures=true,max_objects=1",
    "digits"]`` (a ``key=value`` piece after a spec with ``@`` is one of its options)."""
    specs: list[str] = []
    for piece in (p.strip() for p in _split_items(text)):
        if not piece:
            continue
        if specs and "@" in specs[-1] and _OPTION_ITEM.match(piece) and not any(c in piece for c in ":/@"):
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def join_data_spec(spec: str, options: dict[str, Any]) -> str:
    """The inverse of :func:`split_data_spec`: ``("openmoji", {"skin_tones": False})`` ->
    ``"openmoji@skin_tones=false"``."""
    if not options:
        return spec
    return f"{spec}@" + ",".join(f"{k}={_format_value(v)}" for k, v in options.items())


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)


def merge_data_options(spec: str, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Options of a spec's ``@`` part merged with options given separately; a key given in both
    with different values is an error naming it."""
    head, from_spec = split_data_spec(spec)
    merged = dict(options or {})
    for key, value in from_spec.items():
        if key in merged and merged[key] != value:
            raise UserError(f"dataset option {key!r} given twice ({value!r} in {spec!r} and {merged[key]!r}); "
                            "give it once")
        merged[key] = value
    return head, merged


def nest_overrides(items: list[str], what: str, example: str) -> dict[str, dict[str, Any]]:
    """``["conformal.alpha=0.05"]`` -> ``{"conformal": {"alpha": 0.05}}`` (two-part keys)."""
    nested: dict[str, dict[str, Any]] = {}
    for item in items:
        path, value = parse_override(item)
        if len(path) != 2 or not all(path):
            raise UserError(f"{item!r} must be {what}.KEY=VALUE; write e.g. {example}")
        nested.setdefault(path[0], {})[path[1]] = value
    return nested


def note(text: str) -> None:
    """One line on stderr for an old form that still works."""
    print(f"vlkit: note: {text}", file=sys.stderr)


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """The trailing ``key=value`` overrides (they may also come between options: see
    :func:`take_overrides`)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def add_data(parser: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    parser.add_argument("--data", required=required, metavar="NAME[:VIEW][@k=v,...]", help=help)


def add_device(parser: argparse.ArgumentParser, default: str | None = "auto", config_key: str | None = None) -> None:
    """``--device``; with ``default=None`` the config's ``config_key`` decides (itself auto by default)."""
    fallback = f"the config's {config_key}, auto unless set" if config_key else default
    parser.add_argument("--device", default=default, metavar="{auto,cpu,cuda}",
                        help=f"where to run: auto (the GPU when CUDA is there, else the CPU), cpu or cuda "
                             f"(default: {fallback})")


def take_overrides(args: argparse.Namespace, extras: list[str]) -> list[str]:
    """Move ``key=value`` words argparse left over (they followed an option, as in
    ``vlkit pretrain moji-lit --resume engine.steps=10``) into ``args.overrides``; returns the
    words that are neither (for argparse's "unrecognized arguments")."""
    rest = []
    for word in extras:
        if hasattr(args, "overrides") and not word.startswith("-") and "=" in word:
            args.overrides = [*(args.overrides or []), word]
        else:
            rest.append(word)
    return rest
