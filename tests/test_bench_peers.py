"""Benchmarks that compare against a peer say in one line which install is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _peers():
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_require_names_the_missing_package_and_the_install_command(monkeypatch, capsys):
    peers = _peers()
    monkeypatch.setitem(sys.modules, "braceexpand", None)  # as if not installed
    assert peers.missing(["json", "braceexpand"]) == ["braceexpand"]
    with pytest.raises(SystemExit) as stop:
        peers.require("benchmarks/x.py", "open_clip_train", ["json", "braceexpand"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "braceexpand is not installed" in err and "make bench" in err
    peers.require("benchmarks/x.py", "nothing", ["json"])  # all there: returns


@pytest.mark.parametrize("script,blocked", [("eval_throughput.py", "clip_benchmark"),
                                            ("pretrain_throughput.py", "pandas")])
def test_scripts_stop_in_one_line_without_their_peer(script, blocked):
    code = (f"import sys, runpy; sys.modules[{blocked!r}] = None; sys.argv = [{script!r}]; "
            f"runpy.run_path({str(BENCH / script)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{blocked} is not installed" in lines[0] and "make bench" in lines[0]
