"""Errors a user can cause.

Anything a user can get wrong (a path, a config key, a model name, a corrupt file) raises
:class:`UserError` with one line that names the problem and the fix. The CLI prints that line
and exits with status 2; it never shows a traceback for them.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Iterable


class UserError(Exception):
    """A problem the user can fix; its message is one line naming the problem and the fix."""


class OfflineError(UserError):
    """A spec needs the network and the network cannot be reached."""


def unknown_name(kind: str, name: str, valid: Iterable[str], hint: str = "") -> UserError:
    """Build the standard "unknown X" error that lists the valid names (and a close match)."""
    valid = sorted(valid)
    close = get_close_matches(str(name), valid, n=1)
    did_you_mean = f" (did you mean {close[0]!r}?)" if close else ""
    msg = f"unknown {kind} {name!r}{did_you_mean}; valid: {', '.join(valid)}"
    return UserError(msg + (f"; {hint}" if hint else ""))


def missing_file(path, what: str = "file", hint: str = "") -> UserError:
    msg = f"{what} not found: {path}"
    return UserError(msg + (f"; {hint}" if hint else "; check the path"))


def import_extra(module: str, package: str, extra: str, what: str):
    """Import ``module`` of an optional ``package`` (installed by ``vlkit[extra]``), or raise the
    one line naming the extra: vlkit imports without its demo data and models, and only the
    commands that use them ask for them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the {package} package, which is not installed; "
                        f"pip install 'vlkit[{extra}]' (or pip install {package})") from None
