"""A pytest plugin that runs mutmut's mutants in one process (docs/testing.md, adapt/methods/).

mutmut 3 starts a pytest run per mutant; on the 2-core development machine that is about a
minute a mutant for tests/adapt (each run reloads the tiny model, the digits splits and their
features). This plugin keeps those session fixtures and runs, per mutant, the tests that reach
the mutated function, with mutmut's own switch (``MUTANT_UNDER_TEST``) read by the trampolines
mutmut wrote into ``mutants/src``:

1. coverage: every selected test runs once with ``MUTANT_UNDER_TEST=stats`` and records the
   trampolined functions it reaches (a clean failure stops the run);
2. per mutant: the covering tests, fastest first, until one fails (killed), one runs past 120 s
   (timeout) or all pass (survived);
3. after a kill the killing test runs again with no mutant; if it fails then, a mutant has
   damaged shared state and the run stops with "poisoned" rather than count false kills.

Run from ``mutants/`` (made by ``mutmut run``) with ``PYTHONPATH=src:../tests/mutation``:
``MUTRUN_FILES`` (comma-separated modules whose ``.py.meta`` lists the mutants), ``MUTRUN_OUT``
(a JSON of results, resumed if it exists), optional ``MUTRUN_ONLY`` (comma-separated mutant
names, rerun even if recorded). Not collected as a test (no ``test_`` prefix); needs mutmut.
"""
import json
import os
import signal
import time
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol

import mutmut.mutation.trampoline as tramp

HITS = set()


def _hit(name, caller=None):
    HITS.add(name)


tramp.record_trampoline_hit = _hit


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def _run(item, limit=120):
    item.session._setupstate.teardown_exact(item)
    if hasattr(item, "_initrequest"):
        item._initrequest()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    t = time.time()
    try:
        reports = runtestprotocol(item, nextitem=item.parent, log=False)
    finally:
        signal.alarm(0)
    bad = [r for r in reports if r.failed]
    if bad and os.environ.get("MUTRUN_DEBUG"):
        print(str(bad[0].longrepr)[-1500:])
    return bool(bad), time.time() - t


def _mutants(prefixes):
    names = []
    for p in prefixes:
        meta = Path("src") / (p.replace(".", "/") + ".py.meta")
        names += list(json.loads(meta.read_text())["exit_code_by_key"])
    return names


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    prefixes = os.environ["MUTRUN_FILES"].split(",")
    out = Path(os.environ["MUTRUN_OUT"])
    items = {it.nodeid: it for it in session.items}
    cover, dur = {}, {}
    for nodeid, item in items.items():
        HITS.clear()
        os.environ["MUTANT_UNDER_TEST"] = "stats"
        failed, dur[nodeid] = _run(item)
        os.environ["MUTANT_UNDER_TEST"] = ""
        if failed:
            raise RuntimeError(f"clean test fails: {nodeid}")
        for h in HITS:
            cover.setdefault(h, []).append(nodeid)
    only = os.environ.get("MUTRUN_ONLY")
    names = only.split(",") if only else _mutants(prefixes)
    results = json.loads(out.read_text()) if out.exists() else {}
    t0 = time.time()
    for m in names:
        if m in results and not only:
            continue
        fn = m.partition("__mutmut_")[0]
        tests = sorted(cover.get(fn, []), key=lambda n: dur[n])
        status, by = "no tests", None
        if tests:
            status = "survived"
            os.environ["MUTANT_UNDER_TEST"] = m
            for nodeid in tests:
                try:
                    failed, _ = _run(items[nodeid])
                except Timeout:
                    status, by = "timeout", nodeid
                    break
                if failed:
                    status, by = "killed", nodeid
                    break
            os.environ["MUTANT_UNDER_TEST"] = ""
            if by is not None:
                os.environ["MUTRUN_DEBUG"] = "1"
                failed, _ = _run(items[by])
                os.environ["MUTRUN_DEBUG"] = ""
                if failed:
                    results[m] = {"status": "poisoned", "by": by}
                    out.write_text(json.dumps(results, indent=1))
                    raise RuntimeError(f"{m}: {by} fails clean afterwards")
        results[m] = {"status": status, "by": by, "n_tests": len(tests)}
        out.write_text(json.dumps(results, indent=1))
        print(f"{len(results)} {m} {status} ({time.time() - t0:.0f}s)", flush=True)
    return True
