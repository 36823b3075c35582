"""Recipes (experiment YAMLs) that ship with vlkit, found by name.

``configs/`` in the repository is the package's ``vlkit/configs`` directory, so
``vlkit pretrain configs/pretrain/moji-lit.yaml`` and ``vlkit pretrain moji-lit`` name the same
file, and an installed vlkit still finds its recipes.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

RECIPES = Path(__file__).resolve().parent / "configs"


def recipe_path(name_or_path: str | Path, kind: str | None = None) -> Path:
    """A YAML path as given, else a shipped recipe: ``moji-lit`` or ``pretrain/moji-lit``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidates = [RECIPES / f"{name_or_path}.yaml"]
    if kind:
        candidates.insert(0, RECIPES / kind / f"{name_or_path}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.rglob("*.yaml"))
    if kind:
        known = [k.split("/", 1)[1] for k in known if k.startswith(kind + "/")]
    raise UserError(f"no recipe named {name_or_path!r}; shipped: {', '.join(known) or 'none'}; "
                    "or give the path of a YAML file")


def command_writing(model_dir: str | Path) -> str | None:
    """The command that writes ``model_dir`` (a run's ``model/`` folder): ``vlkit pretrain NAME``
    for a shipped recipe whose ``out_dir`` holds it, ``vlkit demo`` for the demo's; else None."""
    run_dir = Path(model_dir).expanduser()
    if run_dir.name != "model":
        return None
    run_dir = run_dir.parent
    if run_dir == Path("runs/demo"):
        return "vlkit demo"
    import yaml

    for path in sorted((RECIPES / "pretrain").glob("*.yaml")):
        try:
            out_dir = (yaml.safe_load(path.read_text()) or {}).get("out_dir")
        except (OSError, yaml.YAMLError):
            continue
        if out_dir and Path(out_dir) == run_dir:
            return f"vlkit pretrain {path.stem}"
    return None
