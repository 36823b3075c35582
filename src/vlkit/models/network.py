"""Offline-first access to pretrained files: local caches first, a short probe, then fail fast.

Loading a model spec must never hang on a machine without network. Before any download vlkit
(1) looks for the files in the local Hugging Face cache (and open_clip's URL cache), (2) honours
``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``), and (3) probes the host with one HTTPS
request limited to ``PROBE_TIMEOUT_S`` seconds, run in a daemon thread so a slow DNS lookup
cannot block longer. If the host cannot be reached it raises :class:`~vlkit.errors.OfflineError`
saying how to use a local file instead. Probe results are remembered for a minute.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from ..errors import OfflineError

PROBE_TIMEOUT_S = 3.0
_PROBES: dict[str, tuple[float, bool]] = {}


def offline_env() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HTTPS HEAD request to ``host``, bounded by ``timeout`` seconds overall.

    Any HTTP answer (even an error status) counts as reachable. A bare TCP connect is not enough:
    sandboxes and firewalls often accept every connection and then drop the traffic.
    """
    now = time.monotonic()
    cached = _PROBES.get(host)
    if cached and now - cached[0] < 60:
        return cached[1]
    result: list[bool] = []

    def attempt():
        try:
            urllib.request.urlopen(urllib.request.Request(f"https://{host}/", method="HEAD"), timeout=timeout).close()
            result.append(True)
        except urllib.error.HTTPError:  # the server answered
            result.append(True)
        except Exception:  # DNS failure, refused, TLS failure, timeout
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    ok = bool(result and result[0])
    _PROBES[host] = (now, ok)
    return ok


def hf_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def require_network(what: str, local_hint: str, host: str | None = None) -> None:
    """Raise OfflineError (fast) unless ``host`` (default: the HF hub) can be reached."""
    host = host or hf_host()
    if offline_env():
        raise OfflineError(f"{what} needs the network but HF_HUB_OFFLINE is set; {local_hint}")
    if not reachable(host):
        raise OfflineError(f"{what} needs the network and {host} cannot be reached; {local_hint}")


def hf_cached_file(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` of ``repo_id`` in the local HF cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # an invalid repo id, a damaged cache: treat as not cached
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def hf_snapshot(repo_id: str, what: str, local_hint: str, patterns: list[str] | None = None) -> Path:
    """A local directory holding ``repo_id``'s files: the cached snapshot, or a fresh download."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns)
        if (Path(path) / "config.json").is_file() or patterns:
            return Path(path)
    except Exception:
        pass
    require_network(what, local_hint)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # the hub answered but refused (unknown repo, gated, ...)
        from ..errors import UserError

        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not download {repo_id!r} from the Hugging Face hub ({first}); {local_hint}") from None
