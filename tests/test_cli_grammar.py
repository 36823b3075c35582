"""The one command-line grammar (vlkit.grammar): options, data options and the device, the same
in every subcommand; ``vlkit --help`` without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlkit import grammar
from vlkit.cli import _file_stem, main, parse_args, pretrain_config
from vlkit.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"


def test_help_of_every_subcommand_imports_no_torch_scipy_or_sklearn():
    code = (
        "import sys\n"
        "from vlkit.cli import main\n"
        "for argv in (['--help'], ['demo', '--help'], ['pretrain', '--help'], ['eval', '--help'],\n"
        "             ['adapt', '--help'], ['data', 'show', '--help'], ['models', '--help'], ['cache', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, argv\n"
        "print('HEAVY', sorted(m for m in ('torch', 'scipy', 'sklearn') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize("spec, expected", [
    ("openmoji", ("openmoji", {})),
    ("openmoji:subgroup@skin_tones=false,glyph_scale=0.5",
     ("openmoji:subgroup", {"skin_tones": False, "glyph_scale": 0.5})),
    ("shapes@ks=[1,5],name=a", ("shapes", {"ks": [1, 5], "name": "a"})),
    ("imagefolder=/data/me@host/pets", ("imagefolder=/data/me@host/pets", {})),  # '@' inside a path
    ("captions=/d/{split}.csv@strict=true", ("captions=/d/{split}.csv", {"strict": True})),
])
def test_data_spec_splits_into_spec_and_options(spec, expected):
    assert grammar.split_data_spec(spec) == expected
    head, options = expected
    assert grammar.split_data_spec(grammar.join_data_spec(head, options)) == expected


@pytest.mark.parametrize("spec, message", [
    ("openmoji@", "dataset option '' in 'openmoji@' is not key=value; write e.g. openmoji@skin_tones=false"),
    ("openmoji@skin_tones", "dataset option 'skin_tones' in 'openmoji@skin_tones' is not key=value"),
    ("@a=1", "has no name before '@'"),
    ("openmoji@a=1,a=2", "dataset option 'a' given twice"),
    ("openmoji@a.b=1", "has a dotted key"),
])
def test_bad_data_options_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")) as e:
        grammar.split_data_spec(spec)
    assert "\n" not in str(e.value)


def test_a_list_of_specs_keeps_each_specs_options():
    assert grammar.split_specs("shapes:color@textures=true,max_objects=1,digits,imagefolder=/d/x") == [
        "shapes:color@textures=true,max_objects=1", "digits", "imagefolder=/d/x"]
    assert grammar.split_specs("digits@a=1,openmoji@b=[1,2],c=3") == ["digits@a=1", "openmoji@b=[1,2],c=3"]
    args = parse_args(["adapt", "--protocol", "cross", "--targets", "shapes:color@max_objects=1,n_test=8,digits"])
    assert args.targets == ["shapes:color@max_objects=1,n_test=8", "digits"]


def test_key_value_words_are_overrides_wherever_they_stand():
    args = parse_args(["pretrain", "moji-lit", "--resume", "engine.steps=3"])  # argparse alone refuses this
    assert args.resume and args.overrides == ["engine.steps=3"]
    args = parse_args(["eval", "preset:tiny-clip", "conformal.alpha=0.05", "--data", "digits", "--suite",
                       "conformal", "--seed", "1", "conformal.n_cal=10"])
    assert args.overrides == ["conformal.alpha=0.05", "conformal.n_cal=10"] and args.seed == 1
    args = parse_args(["adapt", "--method", "coop", "n_ctx=4", "--data", "digits@image_size=16", "coop.lr=0.01"])
    assert args.overrides == ["n_ctx=4", "coop.lr=0.01"] and args.data == "digits@image_size=16"
    with pytest.raises(SystemExit) as e:  # a word that is no key=value is still refused
        parse_args(["pretrain", "moji-lit", "--resume", "stray"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):  # data show takes no overrides
        parse_args(["data", "show", "digits", "--n", "2", "a=1"])


def test_every_training_and_eval_subcommand_takes_data_device_and_overrides():
    for argv in (["pretrain", "moji-lit"], ["eval", "m", "--data", "digits", "--suite", "zeroshot"], ["adapt"]):
        args = parse_args([*argv, "--device", "cpu", "--data", "digits@image_size=16", "a.b=1"])
        assert (args.device, args.data, args.overrides) == ("cpu", "digits@image_size=16", ["a.b=1"]), argv


def test_pretrain_data_flag_sets_name_and_options_device_and_overrides():
    cfg = pretrain_config(parse_args(["pretrain", "moji-lit", "--data", "openmoji@image_size=32",
                                      "--device", "cpu", "engine.steps=3"]))
    # the recipe's own option (skin_tones: false) stays for the same dataset; image_size is added
    assert cfg.data.name == "openmoji" and cfg.data.options == {"skin_tones": False, "image_size": 32}
    assert cfg.engine.device == "cpu" and cfg.engine.steps == 3
    cfg = pretrain_config(parse_args(["pretrain", "moji-lit", "--data", "digits"]))
    assert cfg.data.name == "digits" and cfg.data.options == {}  # another dataset: the recipe's options go
    with pytest.raises(UserError, match=r"unknown config key 'engine\.stepz' in engine; valid keys: .*steps"):
        pretrain_config(parse_args(["pretrain", "moji-lit", "engine.stepz=3"]))


def test_data_load_reads_options_after_at_as_keywords():
    from vlkit import data

    by_spec = data.load("shapes:color@n_train=8,n_val=4,n_test=6,image_size=16", split="test")
    by_keyword = data.load("shapes:color", split="test", n_train=8, n_val=4, n_test=6, image_size=16)
    assert len(by_spec) == 6 and by_spec.fingerprint() == by_keyword.fingerprint()
    with pytest.raises(UserError, match="dataset option 'n_test' given twice"):
        data.load("shapes@n_test=6", split="test", n_test=5)
    with pytest.raises(UserError, match=r"unknown config key 'shapes\.n_tset' in shapes; valid keys: .*n_test"):
        data.load("shapes@n_tset=6", split="test")


def test_data_show_names_its_file_after_the_whole_spec():
    assert _file_stem("openmoji:group@skin_tones=false") == "openmoji-group_skin_tones-false"


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine that says it has one CUDA GPU (nothing is put on it: the model is a fake)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_one_device_rule_picks_the_gpu_in_pretrain_adapt_and_eval(one_gpu, monkeypatch, tmp_path):
    from vlkit import models
    from vlkit.adapt.api import resolve_device
    from vlkit.engine.distributed import init_distributed, pick_device

    gpu = torch.device("cuda", 0)
    assert pick_device("auto") == gpu and pick_device("cpu") == torch.device("cpu")
    assert init_distributed(False, "auto").device == gpu  # pretrain (engine.device: auto)
    assert resolve_device("auto") == gpu  # adapt (device: auto)

    moved = []

    class FakeModel:
        def to(self, device):
            moved.append(device)
            raise UserError("stop here")  # the rest of the evaluation is not the point

    monkeypatch.setattr(models, "load", lambda spec: FakeModel())
    base = ["eval", "preset:tiny-clip", "--data", "digits", "--suite", "zeroshot"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert main([*base, "--out", str(tmp_path / "b"), "--device", "cpu"]) == 2
    assert moved == [gpu, torch.device("cpu")]  # eval: the GPU by default, as pretrain and adapt

    from types import SimpleNamespace

    from vlkit.demo import pretrain_model

    with pytest.raises(UserError, match="stop here"):
        pretrain_model(SimpleNamespace(model_dir=tmp_path))
    assert moved[-1] == gpu  # the demo evaluates its trained model there too


def test_asking_for_a_gpu_that_is_not_there_is_one_line(monkeypatch):
    from vlkit.engine.distributed import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="device cuda asked for, but no CUDA GPU is visible; use --device cpu"):
        pick_device("cuda")
    with pytest.raises(UserError, match="unknown device 'gpu'; use auto, cpu or cuda"):
        pick_device("gpu")
