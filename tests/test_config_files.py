"""Config files that are not YAML text (binary, control characters, bad syntax) are one line
naming the file (and the line) and the fix, through the library and through the CLI."""

from __future__ import annotations

import pytest

from vlkit import config
from vlkit.cli import main
from vlkit.errors import UserError
from vlkit.pretrain.config import PretrainConfig

CASES = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", r"is not UTF-8 text \(line 2 holds byte 0x89\)"),
    (b"model: preset:tiny-clip\nsteps: 3\x00\x01\n", r"holds a character YAML does not allow \(U\+0000\) at line 3"),
    (b"model: [unclosed\nsteps: 3\n", r"is not valid YAML at line \d"),
    (b"- a list\n- not a mapping\n", r"must hold a mapping"),
]


@pytest.mark.parametrize("content, match", CASES)
def test_config_file_that_is_not_yaml_text_is_one_line(tmp_path, content, match):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"# a config\n" + content)
    with pytest.raises(UserError, match=match) as info:
        config.load(path, PretrainConfig)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("argv", [["pretrain", "{path}"], ["models", "info", "{path}"]])
def test_cli_reports_a_binary_config_or_model_file_in_one_line(tmp_path, capsys, argv):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    rc = main([a.format(path=path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "is not UTF-8 text" in err and str(path) in err


@pytest.mark.parametrize("content, match", [
    (b"time_budget_s: 2001-13-01\n", r"holds a value YAML cannot read \(month must be in 1..12\)"),
    (b"time_budget_s: " + b"9" * 5000 + b"\n", r"holds a value YAML cannot read"),
    (b"data:\n  options:\n    1: 2\n", r"has a key that is not a name \(1\) under 'data.options'"),
    (b"yes: 1\n", r"has a key that is not a name \(True\)"),
])
def test_config_file_values_yaml_cannot_construct_are_one_line(tmp_path, content, match):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match) as info:
        config.load(path, PretrainConfig)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
