"""``vlkit data export`` on the command line: ``--overwrite`` reaches the exporter, a refusal is
one line with exit status 2, and the printed count is what the files hold (loaded back)."""

from __future__ import annotations

import re
import warnings

from vlkit import data
from vlkit.cli import main


def _export(capsys, *argv):
    rc = main(["data", "export", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _loaded_back(printed: str) -> int:
    spec = re.fullmatch(r"wrote \d+ samples as captions to (.+)\n", printed)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return len(data.load(f"captions={spec}", split="all"))


def test_export_refuses_a_used_folder_unless_overwrite_and_prints_what_was_written(tmp_path, capsys):
    out = str(tmp_path / "export")
    n_test, n_val = len(data.load("digits", split="test")), len(data.load("digits", split="val"))
    rc, printed, _ = _export(capsys, "digits", out, "--format", "captions", "--split", "test")
    assert rc == 0 and printed.startswith(f"wrote {n_test} samples as captions to ")
    assert _loaded_back(printed) == n_test

    rc, printed, err = _export(capsys, "digits", out, "--format", "captions", "--split", "val")
    assert rc == 2 and printed == "" and err.count("\n") == 1
    assert err.startswith("vlkit: error: export folder ") and "not empty" in err and "--overwrite" in err
    assert _loaded_back(f"wrote 0 samples as captions to {out}/captions.csv\n") == n_test  # untouched

    rc, printed, _ = _export(capsys, "digits", out, "--format", "captions", "--split", "val", "--overwrite")
    assert rc == 0 and printed.startswith(f"wrote {n_val} samples as captions to ")
    assert _loaded_back(printed) == n_val != n_test  # the earlier, larger export left no rows behind
