"""Every repository file that README.md and docs/*.md name in backticks exists.

A name counts as a repository path when it starts at a top-level folder of the repository
(``src/``, ``tests/``, ``benchmarks/``, ``configs/``, ``docs/``) or is a source file name
(``*.py``, or ``DIR/NAME.yaml``): a path is looked up from the root, then under ``src/vlkit/``
(docs write ``evaluate/sources.py``); a bare ``.py`` name must exist somewhere in the tree. Run
outputs (``metrics.json``, ``config.yaml``, ``runs/...``, ``checkpoints/step_N.pt``) and
placeholders (``<protocol>``) are not repository paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("src/", "tests/", "benchmarks/", "configs/", "docs/")
SOURCE = re.compile(r"^([\w.\-/*]+\.py|[\w.\-*]+/[\w.\-/*]+\.ya?ml)$")
_TREE = [p for p in ROOT.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts]
NAMES = {p.name for p in _TREE}


def named_paths(text: str) -> list[str]:
    """Backticked words of ``text`` that look like repository paths (see the module docstring)."""
    found = []
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split("::")[0].rstrip(".,:;")
        if any(c in token for c in "<>{}=$") or token.startswith(("runs/", "out/", "/", "~", ".", "http")):
            continue
        if token.startswith(TOP) or SOURCE.match(token):
            found.append(token)
    return found


def exists(token: str) -> bool:
    for base in (ROOT, ROOT / "src" / "vlkit"):
        if "*" in token:
            if any(base.glob(token)):
                return True
        elif (base / token).exists():
            return True
    return "/" not in token and token in NAMES


def test_the_checker_sees_paths_and_skips_outputs():
    text = ("`src/vlkit/cli.py` `configs/adapt/*.yaml` `evaluate/sources.py` `test_cli_grammar.py` "
            "`metrics.json` `config.yaml` `runs/demo/report.html` `results-<protocol>.md` `--data` `docs/nope.md`")
    assert named_paths(text) == ["src/vlkit/cli.py", "configs/adapt/*.yaml", "evaluate/sources.py",
                                 "test_cli_grammar.py", "docs/nope.md"]
    assert [t for t in named_paths(text) if not exists(t)] == ["docs/nope.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_doc_names_exists(doc):
    missing = [t for t in named_paths(doc.read_text(encoding="utf-8")) if not exists(t)]
    assert missing == [], f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(doc: Path) -> list[str]:
    """Relative markdown links of ``doc`` whose file, or heading anchor, is not there."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path) if path else doc
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    return broken


def test_slug_is_githubs():
    assert slug("Each method's reference settings") == "each-methods-reference-settings"
    assert slug("Shared feature cache: `benchmarks/adapt_speed.py`") == "shared-feature-cache-benchmarksadapt_speedpy"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_of_a_doc_resolves(doc):
    assert broken_links(doc) == []


def test_broken_links_are_found(tmp_path):
    (tmp_path / "b.md").write_text("# Real heading\n")
    doc = tmp_path / "a.md"
    doc.write_text("[ok](b.md#real-heading) [gone](c.md) [bad anchor](b.md#other) [web](https://x.org/y)\n")
    assert broken_links(doc) == ["c.md", "b.md#other"]
