"""Reading shapes scenes from sample metadata (shared by compositional, robustness, reward).

The ``shapes`` dataset (vlkit.data.shapes) stores per sample ``meta["objects"]``, a list of
``{"shape", "color", "size", "cx", "cy", ...}``, and ``meta["relations"]``, ``[i, j, rel]``
triples ("object i is <rel> object j", rel one of "left of", "right of", "above", "below").
Any dataset whose meta follows that shape works with these suites. Captions are rebuilt
from the meta with one small grammar, so a probe changes exactly one thing.
"""

from __future__ import annotations

from ..errors import UserError

RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def is_scene(meta: dict) -> bool:
    objs = meta.get("objects")
    return isinstance(objs, list) and bool(objs) and all(
        isinstance(o, dict) and "shape" in o and "color" in o for o in objs
    )


def require_scenes(metas: list[dict], suite: str) -> None:
    """UserError unless the samples carry shapes-style object attributes."""
    if not metas or not all(is_scene(m) for m in metas):
        raise UserError(
            f"{suite}: samples have no per-object attributes (meta['objects'] with shape and color); "
            "run this suite on the shapes dataset, e.g. --data shapes"
        )


def phrase(obj: dict, attributes=("color",)) -> str:
    """"a red circle", "a large red circle": the named attributes, then the shape."""
    words = [str(obj[a]) for a in attributes if obj.get(a)]
    return "a " + " ".join(words + [str(obj["shape"])])


def first_relation(meta: dict):
    """(i, j, rel) of the first stated relation, or one derived from the centers, or None."""
    objs = meta["objects"]
    for rel in meta.get("relations") or []:
        i, j, word = int(rel[0]), int(rel[1]), str(rel[2])
        if i < len(objs) and j < len(objs):
            return i, j, word
    if len(objs) >= 2 and all(k in objs[0] and k in objs[1] for k in ("cx", "cy")):
        a, b = objs[0], objs[1]
        dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
        if abs(dx) >= abs(dy):
            return 0, 1, "left of" if dx > 0 else "right of"
        return 0, 1, "above" if dy > 0 else "below"
    return None


def scene_caption(meta: dict, attributes=("color",), objects=None) -> str:
    """The scene as "<A> <rel> <B>" (first relation) or "<A>" for one object.

    ``objects`` replaces the scene's objects (same order), e.g. with swapped attributes.
    """
    objs = objects if objects is not None else meta["objects"]
    rel = first_relation(meta)
    if rel is None:
        return phrase(objs[0], attributes)
    i, j, word = rel
    return f"{phrase(objs[i], attributes)} {word} {phrase(objs[j], attributes)}"


def vocabulary(metas: list[dict], attribute: str) -> list[str]:
    """Values of an object attribute seen in these scenes, in first-seen order."""
    seen: dict[str, None] = {}
    for m in metas:
        for o in m["objects"]:
            if o.get(attribute) is not None:
                seen[str(o[attribute])] = None
    return list(seen)
