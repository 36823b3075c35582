"""Typed configs: dataclasses, YAML files and dotted overrides.

Each component owns a dataclass. :func:`build` turns a nested mapping (from YAML, plus
``key.sub=value`` overrides) into that dataclass, refusing unknown keys (listing the valid ones)
and values of the wrong type. :func:`save` writes the resolved config next to the outputs.

Example::

    @dataclass
    class Optim:
        lr: float = 1e-3

    @dataclass
    class Train:
        steps: int = 100
        optim: Optim = field(default_factory=Optim)

    cfg = load("configs/x.yaml", Train, ["optim.lr=5e-4"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from .errors import UserError, missing_file

C = TypeVar("C")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not key=value; write e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has an empty key; write e.g. optim.lr=1e-3")
    return key.split("."), (_yaml_value(raw) if raw.strip() else "")


def _yaml_value(raw: str) -> Any:
    """``raw`` read as a YAML value, or ``raw`` itself where YAML cannot read it ("{", "2001-13-01")."""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError):  # pyyaml's constructors raise these too
        return raw


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Set dotted keys in a nested dict (copying it); types are checked later by :func:`build`."""
    import copy

    data = copy.deepcopy(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise UserError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a file that is missing, unreadable, not UTF-8 text, not YAML
    or not a mapping is a UserError of one line naming it (and the line, where known)."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "config file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read config file {path} ({e.strerror or e}); check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"config file {path} is not UTF-8 text (line {line} holds byte 0x{raw[e.start]:02x}); "
                        "give a YAML text file") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (binary data, control codes)
        line = text[: e.position].count("\n") + 1
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        raise UserError(f"config file {path} holds a character YAML does not allow ({char}) at line {line}; "
                        "give a YAML text file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    except RecursionError:
        raise UserError(f"config file {path} nests too deeply to be a config; fix its syntax") from None
    except (ValueError, TypeError, AttributeError) as e:  # pyyaml's constructors: a bad date, a 5,000-digit int
        raise UserError(f"config file {path} holds a value YAML cannot read ({' '.join(str(e).split())[:120]}); "
                        "fix it or quote it as a string") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    _check_keys(data, path, "")
    return data


def _check_keys(node: Any, path: Path, where: str) -> None:
    """Every key of every mapping in a config file is a name (YAML also allows 1:, yes:, null:)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                inside = f" under {where!r}" if where else ""
                raise UserError(f"config file {path} has a key that is not a name ({k!r}){inside}; "
                                "write keys as names, quoting them where YAML reads a number or true/false")
            _check_keys(v, path, f"{where}.{k}" if where else k)
    elif isinstance(node, list):
        for v in node:
            _check_keys(v, path, where)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a section (mapping), got {value!r}")
        return build(tp, value, prefix=where + ".")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, str) and origin is not None:
            value = [_yaml_value(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def fields_of(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def build(cls: type[C], data: Mapping[str, Any] | None = None, prefix: str = "") -> C:
    """Make ``cls`` from a nested mapping; unknown keys and wrong types raise UserError."""
    data = dict(data or {})
    fields = fields_of(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = prefix.rstrip(".") or cls.__name__
        raise UserError(
            f"unknown config key {prefix + unknown[0]!r} in {where}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, fields[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise UserError(f"config {prefix.rstrip('.') or cls.__name__}: {e}") from None


def load(path: str | Path | None, cls: type[C], overrides: Iterable[str] = ()) -> C:
    """Read a YAML file (or nothing), apply dotted overrides, and build the typed config."""
    data = read_yaml(path) if path else {}
    return build(cls, apply_overrides(data, overrides))


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def save(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (the run directory keeps what actually ran).

    Atomically: the text goes to a temporary file in the same folder that is then renamed over
    ``path``, so a kill or a full disk leaves the previous file whole, never half of the new one.
    """
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
