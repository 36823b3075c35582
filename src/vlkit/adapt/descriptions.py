"""Class descriptions: several phrases per class, the stand-in for LLM-generated descriptions.

Methods that regularise towards an ensemble of per-class descriptions (BiomedCoOp's
GPT-written prompts, CoPrompt's) read them through one function::

    descriptions.load(dataset_or_classnames, path=None) -> {class name: [description, ...]}

``path``: a user's YAML or JSON file mapping every class name to a list of strings (the
method key ``descriptions=PATH``). Without it, descriptions are generated deterministically
from what the embedded datasets already know, no language model involved:

- **digits**: the dataset's caption grammar ("a handwritten digit 3", "the number three", ...);
- **shapes**: the scene grammar's vocabulary: a shape in every color and size, a color on
  every shape, a size with every color, a count as "three shapes", "three objects", ...;
- **openmoji**: per concept its CLDR name, the ``emoji`` package's aliases and its names in
  five other languages (de, es, fr, it, pt; a text tower trained on English reads them as
  noise, which is what an ensemble filter such as BiomedCoOp's is for); per subgroup and
  group its name and up to 24 of its member emoji. (Neither installed package carries CLDR
  keywords, so there are none.)

Each dataset view has its own table; the table that names every class with the fewest others
wins (digits' "one" is a digit; shapes' counts, one..nine, are named the same), otherwise each
class takes the first table that knows it.
A class nobody knows raises one line naming it and the fix. Frozen text features of the
descriptions go through the shared feature cache (:func:`description_features`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError, missing_file

LANGUAGES = ("de", "es", "fr", "it", "pt")  # multilingual emoji names (the emoji package's)
MAX_MEMBERS = 24  # member emoji named per subgroup / group description list


def load(source, path: str | Path | None = None) -> dict[str, list[str]]:
    """``{class: [descriptions]}`` in the class order of ``source`` (a dataset, split or names)."""
    names = [str(c) for c in (getattr(source, "classnames", None) or source)]
    if not names:
        raise UserError("no class names to describe; give a labelled dataset view or a list of class names")
    if path:
        table, origin = read_file(path), f"description file {path}"
    else:
        table, origin = builtin(names), "the built-in descriptions (digits, shapes, openmoji)"
    missing = [c for c in names if not table.get(c)]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        fix = (f"add them to {path}" if path else
               "pass descriptions=PATH (vlkit adapt: METHOD.descriptions=PATH)")
        raise UserError(f"{origin} has no descriptions for {len(missing)} of {len(names)} classes ({shown}); "
                        f"{fix}, a YAML/JSON file mapping every class name to a list of descriptions")
    return {c: list(table[c]) for c in names}


def read_file(path: str | Path) -> dict[str, list[str]]:
    """A user's description file: a mapping class name -> list of non-empty strings."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise missing_file(p, "description file", "give a YAML/JSON file mapping class names to lists of descriptions")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML reads JSON too
    except yaml.YAMLError as e:
        raise UserError(f"description file {p} is not valid YAML/JSON ({str(e).splitlines()[0]}); fix its syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"description file {p} must map class names to lists of descriptions, "
                        f"e.g. {{\"cat\": [\"a small pet\"]}}; it holds a {type(data).__name__}")
    out = {}
    for name, texts in data.items():
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise UserError(f"description file {p}: class {name!r} must map to a list of strings")
        out[str(name)] = [t.strip() for t in texts if t.strip()]
    return out


def builtin(names: Sequence[str]) -> dict[str, list[str]]:
    """Generated descriptions for ``names`` (see the module docstring); classes nobody knows are left out.

    The view whose table names every class, with the fewest other classes, wins: ["one", "two",
    "three"] are shapes counts (one..nine), not digits (zero..nine).
    """
    tables = [table() for table in TABLES.values()]
    covering = [t for t in tables if all(t.get(c) for c in names)]
    if covering:
        return min(covering, key=len)  # min keeps the first of equals: TABLES' order breaks ties
    return {c: next(t[c] for t in tables if t.get(c)) for c in names if any(t.get(c) for t in tables)}


def _unique(texts) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


@functools.lru_cache(maxsize=1)
def digits_descriptions() -> dict[str, list[str]]:
    from ..data.catalog import read_classes

    cls = read_classes("digits")
    words = cls["views"]["digit"]["classnames"]
    templates = cls["caption_templates"] + cls["views"]["digit"]["templates"]
    out = {}
    for d, word in enumerate(words):
        filled = [t.format(digit=d, word=word) if "{digit}" in t or "{word}" in t else t.format(word) for t in templates]
        out[word] = _unique(filled + [f"the digit {d}", f"a handwritten {d}"])
    return out


@functools.lru_cache(maxsize=1)
def shapes_descriptions() -> dict[str, dict[str, list[str]]]:
    """Per view (shape, color, size, count) its class names' descriptions, from the scene grammar."""
    from ..data.catalog import read_classes

    cls = read_classes("shapes")
    shapes, colors, sizes, words = cls["shapes"], list(cls["colors"]), list(cls["sizes"]), cls["count_words"]
    out: dict[str, dict[str, list[str]]] = {"shape": {}, "color": {}, "size": {}, "count": {}}
    for s in shapes:
        out["shape"][s] = _unique([f"a {c} {s}" for c in colors] + [f"a {z} {s}" for z in sizes] + [f"a striped {s}"])
    for c in colors:
        out["color"][c] = _unique([f"a {c} {s}" for s in shapes] + [f"something {c}", f"a {c} object"])
    for z in sizes:
        out["size"][z] = _unique([f"a {z} {c} shape" for c in colors] + [f"a {z} {s}" for s in shapes])
    for n, w in enumerate(words[1:], start=1):
        out["count"][w] = _unique([f"{w} shapes", f"{w} objects", f"a picture of {w} shapes", f"{n} shapes on a white background"])
    return out


@functools.lru_cache(maxsize=1)
def openmoji_descriptions() -> dict[str, dict[str, list[str]]]:
    """Per view (concept, subgroup, group) its class names' descriptions ({} without the extras)."""
    from ..data import openmoji as om

    try:
        emoji = _emoji_with_languages()
        entries = [e for e in om.parse_emoji_test(om.emoji_test_path()) if not e.tone]
    except UserError:  # the emoji extras are not installed: no OpenMoji descriptions
        return {}
    cls = om.read_classes("openmoji")
    rw = cls.get("name_rewrites", {})
    bases = om.resolve_bases(entries)
    out: dict[str, dict[str, list[str]]] = {"concept": {}, "subgroup": {}, "group": {}}
    for e in entries:
        name = om.readable(e.name, rw)
        data = emoji.EMOJI_DATA.get(e.seq) or {}
        foreign = [data[lang].strip(":").replace("_", " ") for lang in LANGUAGES if data.get(lang)]
        texts = [f"an emoji of {name}", f"{name} emoji", *(f"an emoji of {a}" for a in om.aliases(e.seq, e.name)),
                 *(f"{f} emoji" for f in foreign)]
        out["concept"].setdefault(om.readable(bases[e.codepoints].name, rw), []).extend(texts)
        sub = cls["subgroup_names"].get(e.subgroup, e.subgroup.replace("-", " "))
        grp = cls["group_names"].get(e.group, e.group.lower().replace("&", "and"))
        out["subgroup"].setdefault(sub, []).append(name)  # members first, turned into phrases below
        out["group"].setdefault(grp, []).append(name)
    for view, template in (("subgroup", "an emoji of the {} kind"), ("group", "an emoji from {}")):
        for label, names in out[view].items():  # named by up to MAX_MEMBERS members, evenly spread
            spread = names[:: max(1, len(names) // MAX_MEMBERS)][:MAX_MEMBERS]
            out[view][label] = [template.format(label)] + [f"{label}, such as {n}" for n in spread]
    return {view: {k: _unique(v) for k, v in table.items()} for view, table in out.items()}


def _emoji_with_languages():
    from ..errors import import_extra

    emoji = import_extra("emoji", "emoji", "demo", "the OpenMoji descriptions (its multilingual names)")
    emoji.config.load_language(list(LANGUAGES))  # adds the languages' names to EMOJI_DATA (idempotent)
    return emoji


def _view(tables: Callable[[], dict[str, dict[str, list[str]]]], view: str) -> Callable[[], dict[str, list[str]]]:
    return lambda: tables().get(view, {})


# One table per dataset view, in the order that breaks ties.
TABLES: dict[str, Callable[[], dict[str, list[str]]]] = {
    "digits": digits_descriptions,
    **{f"shapes:{v}": _view(shapes_descriptions, v) for v in ("shape", "color", "size", "count")},
    **{f"openmoji:{v}": _view(openmoji_descriptions, v) for v in ("concept", "subgroup", "group")},
}


def slots(descriptions: dict[str, list[str]], n_prompts: int) -> list[list[str]]:
    """(n_cls, P) prompts: P = min(n_prompts, the longest list); a shorter list is cycled.

    BiomedCoOp scores "prompt i" across all classes at once, so every class needs the same
    number; cycling repeats a class's own descriptions rather than inventing new ones.
    """
    p = min(n_prompts, max(len(v) for v in descriptions.values()))
    return [[texts[i % len(texts)] for i in range(p)] for texts in descriptions.values()]


def description_features(model, prompts: list[list[str]], batch_size: int = 256) -> torch.Tensor:
    """(n_cls, P, D) L2-normalised frozen text features of the (n_cls, P) prompts, cached."""
    from .features import _feature_cache, text_path_fingerprint

    flat = [t for row in prompts for t in row]
    n_cls, p = len(prompts), len(prompts[0])
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:24]
    key = {"kind": "adapt.descriptions", "model": text_path_fingerprint(model), "prompts": digest}

    def compute() -> torch.Tensor:
        with torch.no_grad():
            emb = torch.cat([model.encode_text(flat[i:i + batch_size]).float().cpu()
                             for i in range(0, len(flat), batch_size)])  # (n_cls * P, D)
        return F.normalize(emb, dim=-1).view(n_cls, p, -1)

    return _feature_cache().get(key, compute, rows=n_cls).clone()
