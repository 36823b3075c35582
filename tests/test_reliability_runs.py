"""Run directories: nothing lost, nothing silently wrong (issue 16, items 2, 3, 5, 7, 8 and 9;
checkpoint integrity is in tests/engine/test_checkpoint_integrity.py).

The concurrent-run and kill cases use real processes (``python -m vlkit.cli``), as the resume
tests do: a lock that only works inside one process would pass an in-process test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from vlkit import pretrain
from vlkit.cli import main
from vlkit.engine import lock
from vlkit.engine.logger import read_metrics
from vlkit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
QUICK = ["engine.progress=false", "engine.tensorboard=false"]
TINY = ["model=preset:tiny-clip", "data.name=shapes", "data.max_samples=16", "data.caption=first",
        "data.augment=false", "objectives=[{name: clip}]", "engine.batch_size=8", "engine.schedule.warmup_steps=0", "eval.data=null", *QUICK]


def _env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC + (os.pathsep + path if path else ""))


@contextmanager
def _lock_holder(out_dir: Path):
    """Another live process holding ``out_dir``'s run lock for the block, then killed."""
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from vlkit.engine.lock import acquire; acquire(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(120)", str(out_dir)],
                              env=_env(), stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _vlkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "vlkit.cli", *args]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the first run ended early: {proc.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting for the first run")
        time.sleep(0.2)


# ----------------------------------------------------------------------------- item 2: the run lock
def test_a_second_run_into_a_busy_out_dir_is_refused_naming_the_holder_then_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_vlkit("pretrain", "configs/pretrain/shapes-clip.yaml",
                                    *TINY, "engine.steps=100000", "engine.checkpoint_every=2",
                                    f"out_dir={out}"),
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(read_metrics(out / "metrics.jsonl")) >= 2, first)
        second = subprocess.run(_vlkit("pretrain", "configs/pretrain/shapes-clip.yaml", *TINY,
                                       "engine.steps=4", f"out_dir={out}"),
                                cwd=ROOT, env=_env(), capture_output=True, timeout=300)
        err = second.stderr.decode()
        assert second.returncode == 2, err[-2000:]
        assert f"in use by another vlkit run (PID {first.pid})" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert first.poll() is None  # the first run goes on, its metrics keep growing
        n = len(read_metrics(out / "metrics.jsonl"))
        _wait_for(lambda: len(read_metrics(out / "metrics.jsonl")) > n, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert (out / lock.LOCK_FILE).read_text().strip() == str(first.pid)  # killed: the file stays

    resumed = subprocess.run(_vlkit("pretrain", "configs/pretrain/shapes-clip.yaml", *TINY,
                                    "engine.steps=100000", "time_budget_s=0.5", f"out_dir={out}", "--resume"),
                             cwd=ROOT, env=_env(), capture_output=True, timeout=300)
    err = resumed.stderr.decode()
    assert resumed.returncode == 0, err[-2000:]
    assert f"took over the lock of {out} from PID {first.pid}" in err
    assert not (out / lock.LOCK_FILE).exists()  # released at the end
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps and steps == sorted(set(steps))  # one run's lines, in order, none twice


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_outermost(tmp_path):
    with lock.run_dir_lock(tmp_path):
        with lock.run_dir_lock(tmp_path):
            assert (tmp_path / lock.LOCK_FILE).read_text().strip() == str(os.getpid())
        assert (tmp_path / lock.LOCK_FILE).exists()
    assert not (tmp_path / lock.LOCK_FILE).exists()


def test_a_lock_held_by_another_live_process_is_refused_in_one_line(tmp_path):
    with _lock_holder(tmp_path) as holder:
        with pytest.raises(UserError, match=rf"in use by another vlkit run \(PID {holder.pid}\)") as e:
            lock.acquire(tmp_path)
        assert "\n" not in str(e.value)
    lock.acquire(tmp_path)  # the holder is dead: the kernel dropped its lock
    lock.release(tmp_path)


def test_metrics_lines_of_two_writers_never_interleave(tmp_path):
    """Each metrics line is one O_APPEND write: two writers can add lines, never cut one."""
    script = ("import sys; from vlkit.engine.logger import RunLogger\n"
              "log = RunLogger(sys.argv[1], enabled=True, total_steps=1, progress=False)\n"
              "for i in range(2000): log.log({'step': i, 'writer': sys.argv[2], 'pad': 'x' * 300})\n"
              "log.close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), w], env=_env()) for w in "ab"]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert len(rows) == 4000  # read_metrics stops at the first broken line
    assert sorted(r["step"] for r in rows if r["writer"] == "a") == list(range(2000))


# ----------------------------------------------------------------------------- item 3: validate first
@pytest.mark.parametrize("override, message", [
    ("engine.epochs=0", "epochs must be >= 1, got 0"),
    ("engine.epochs=-3", "epochs must be >= 1, got -3"),
    ("engine.steps=-1", "steps must be >= 1, got -1"),
    ("engine.optim.lr=nan", "optim.lr must be a positive number, got nan"),
    ("engine.optim.lr=-0.1", "optim.lr must be a positive number, got -0.1"),
    ("engine.optim.weight_decay=.inf", "optim.weight_decay must be a number >= 0, got inf"),
    ("engine.optim.betas=[0.9,1.5]", r"optim.betas must be two numbers in \[0, 1\)"),
    ("engine.schedule.min_lr=nan", "schedule.min_lr must be a number >= 0, got nan"),
    ("engine.schedule.warmup_steps=-5", "schedule.warmup_steps must be an integer >= 0, got -5"),
    ("engine.schedule.name=cosin", "unknown lr schedule 'cosin'"),
    ("engine.steps=5 engine.schedule.warmup_steps=10",  # the hint names the keys that fix it
     r"needs total_steps > warmup_steps \(got 5 and 10\); lower engine.schedule.warmup_steps below 5, "
     r"or train longer \(engine.steps or engine.epochs;"),
    ("engine.grad_clip=nan", "grad_clip must be >= 0, got nan"),
    ("engine.batch_size=-4", "batch_size must be >= 1, got -4"),
    ("engine.num_workers=-1", "num_workers must be >= 0, got -1"),
    ("engine.keep_last=-1", "keep_last must be >= 0"),
    ("engine.log_every=0", "log_every must be >= 1, got 0"),
    ("time_budget_s=-1", "time_budget_s must be a positive number of seconds"),
    ("time_budget_s=.nan", "time_budget_s must be a positive number of seconds"),
    ("data.max_samples=-2", "data.max_samples must be >= 1"),
    ("data.scale=[0.9,0.2]", "data.scale must be two numbers"),
])
def test_bad_values_are_refused_before_anything_is_built_or_written(tmp_path, monkeypatch, override, message):
    from vlkit import models

    built = []
    monkeypatch.setattr(models, "load", lambda *a, **k: built.append(a))
    out = tmp_path / "run"
    cfg = pretrain.load_config(None, [*override.split(), f"out_dir={out}"])
    with pytest.raises(UserError, match=message) as e:
        pretrain.run(cfg)
    assert "\n" not in str(e.value)
    assert not built and not out.exists()


def test_a_refused_run_leaves_the_finished_runs_config_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", str(ROOT / "configs/pretrain/shapes-clip.yaml"), *TINY, "engine.steps=2",
            f"out_dir={out}"]
    assert main(args) == 0
    config = (out / "config.yaml").read_bytes()
    metrics = (out / "metrics.jsonl").read_bytes()
    assert main(args[:-1] + ["engine.steps=7", "engine.optim.lr=0.5", f"out_dir={out}"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "config.yaml").read_bytes() == config
    assert (out / "metrics.jsonl").read_bytes() == metrics
    assert not (out / lock.LOCK_FILE).exists()
    assert main(["pretrain", str(ROOT / "configs/pretrain/shapes-clip.yaml"), *TINY, "engine.steps=2",
                 f"out_dir={tmp_path / 'empty'}", "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not list((tmp_path / "empty").glob("*"))  # the refused resume wrote nothing


def test_config_is_written_atomically(tmp_path, monkeypatch):
    from vlkit import config as cfglib

    cfg = pretrain.load_config(None, [f"out_dir={tmp_path}"])
    path = cfglib.save(cfg, tmp_path / "config.yaml")
    before = path.read_bytes()

    def disk_full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        cfglib.save(pretrain.load_config(None, ["out_dir=elsewhere"]), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


# ----------------------------------------------------------------------------- item 5: saved models
def test_a_saved_model_whose_weights_changed_is_refused_by_its_fingerprint(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from vlkit import models

    model = models.load("preset:tiny-clip")
    model.save(tmp_path / "m")
    assert models.load(str(tmp_path / "m")).fingerprint() == model.fingerprint()  # round trip
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0  # a valid file, with other weights
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"does not match the fingerprint saved with it") as e:
        models.load(str(tmp_path / "m"))
    assert "\n" not in str(e.value)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["fingerprint"]  # saved by a vlkit that recorded none: loaded as it is
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    models.load(str(tmp_path / "m"))


# ----------------------------------------------------------------------------- item 8: leftovers, cache cap
def test_the_feature_cache_is_held_to_its_cap_least_recently_used_first(tmp_path, monkeypatch):
    import torch

    from vlkit.cache_admin import CAP_ENV
    from vlkit.data.cache import FeatureCache

    monkeypatch.setenv(CAP_ENV, str(2.5 * 2**20 / 2**30))  # 2.5 MB
    cache = FeatureCache(tmp_path, max_items=0)
    one_mb = lambda v: (lambda: torch.full((256, 1024), float(v)))  # 1 MiB of float32
    for i in range(2):
        cache.get({"entry": i}, one_mb(i))
    old = time.time() - 100
    os.utime(cache.path({"entry": 0}), (old, old))
    os.utime(cache.path({"entry": 1}), (old - 50, old - 50))  # entry 1 is the least recent ...
    assert torch.equal(cache.get({"entry": 0}, one_mb(-1)), one_mb(0)())  # ... entry 0 a disk hit now
    cache.get({"entry": 2}, one_mb(2))  # 3 MiB > 2.5 MB: the least recently used goes
    assert {i for i in range(3) if cache.path({"entry": i}).exists()} == {0, 2}
    total = sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
    assert total <= 2.5 * 2**20
    monkeypatch.setenv(CAP_ENV, "0.0001")  # a cap smaller than one entry: the new entry stays
    cache.get({"entry": 3}, one_mb(3))
    assert [p.name for p in tmp_path.glob("*.safetensors")] == [cache.path({"entry": 3}).name]
    monkeypatch.setenv(CAP_ENV, "lots")
    with pytest.raises(UserError, match=r"VLKIT_FEATURE_CACHE_GB='lots' is not a number"):
        cache.get({"entry": 4}, one_mb(4))


def test_cache_info_and_clear_from_the_cli(tmp_path, monkeypatch, capsys):
    import torch

    from vlkit.data.cache import FeatureCache

    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("VLKIT_FEATURE_CACHE_GB", raising=False)
    cache = FeatureCache()
    cache.get({"a": 1}, lambda: torch.zeros(512, 512))  # 1 MiB
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "data" / "x" / "images.npz").write_bytes(b"0" * 2048)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"vlkit cache at {tmp_path}" in out
    assert "features       1 files      1.0 MB (cap 4.0 GB" in out and "data           1 files      2.0 KB" in out
    assert main(["cache", "clear"]) == 0
    assert "deleted 1 files (1.0 MB) from the features cache" in capsys.readouterr().out
    assert not list((tmp_path / "features").rglob("*.safetensors"))
    assert (tmp_path / "data" / "x" / "images.npz").exists()  # only features by default
    assert main(["cache", "clear", "all"]) == 0
    assert not (tmp_path / "data" / "x" / "images.npz").exists()
    with pytest.raises(SystemExit):
        main(["cache", "clear", "everything"])


# ----------------------------------------------------------------------------- item 9: smaller ones
def test_data_show_with_a_negative_count_is_refused(tmp_path, capsys):
    assert main(["data", "show", "digits", "--n", "-5", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--n must be >= 1, got -5" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
    from vlkit import data
    from vlkit.data.show import contact_sheet

    with pytest.raises(UserError, match="must be >= 1, got 0"):
        contact_sheet(data.load("digits", split="test"), n=0, out_png=tmp_path / "y.png")


def test_an_openclip_spec_with_an_empty_tag_is_refused(capsys):
    from vlkit import models

    with pytest.raises(UserError, match=r"'openclip:ViT-B-32@' has an empty tag after '@'") as e:
        models.load("openclip:ViT-B-32@")
    assert "\n" not in str(e.value)
    assert main(["models", "info", "openclip:ViT-B-32@ "]) == 2
    assert "empty tag" in capsys.readouterr().err


def test_raising_steps_on_resume_rebuilds_the_cosine_for_the_new_length(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from engine_toy import ToyTask, toy_config, toy_data
    from vlkit.engine import fit

    sched = {"name": "cosine", "warmup_steps": 2}
    optim = {"name": "adamw", "lr": 0.1}
    task = lambda: ToyTask(custom_optim=False)
    fit(task(), toy_data(), toy_config(steps=6, optim=optim, schedule=sched), tmp_path / "short")
    longer = fit(task(), toy_data(), toy_config(steps=12, optim=optim, schedule=sched), tmp_path / "short",
                 resume=True)
    assert "lr schedule rebuilt for 12 steps (was 6)" in capsys.readouterr().err
    straight = fit(task(), toy_data(), toy_config(steps=12, optim=optim, schedule=sched), tmp_path / "long")
    # from step 7 on, the lrs are those of a 12-step cosine: warm-up, then decay, never 0 then rising
    lrs = [r["lr"] for r in longer.history]
    want = [r["lr"] for r in straight.history]
    assert lrs[6:] == pytest.approx(want[6:], rel=1e-12)
    assert lrs[6] > 0 and all(a >= b for a, b in zip(lrs[6:], lrs[7:]))
    # by hand: the 12-step cosine at step 6 (warm-up 2): 0.1 * (1 + cos(pi * 4 / 10)) / 2
    import math

    assert lrs[6] == pytest.approx(0.1 * (1 + math.cos(math.pi * 4 / 10)) / 2, rel=1e-12)


def test_a_model_dir_cut_short_before_its_config_suggests_resume(tmp_path):
    from vlkit import models

    model = models.load("preset:tiny-clip")
    (tmp_path / "checkpoints").mkdir()
    model.save(tmp_path / "model")
    (tmp_path / "model" / "config.json").unlink()  # killed before the last file of the save
    with pytest.raises(UserError, match=r"save was cut short .*--resume") as e:
        models.load(str(tmp_path / "model"))
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "model").glob(".*tmp*"))


def test_resuming_a_finished_run_saves_its_model_again(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", str(ROOT / "configs/pretrain/shapes-clip.yaml"), *TINY, "engine.steps=2",
            f"out_dir={out}"]
    assert main(args) == 0
    from vlkit import models

    fp = models.load(str(out / "model")).fingerprint()
    (out / "model" / "config.json").unlink()
    assert main(args + ["--resume"]) == 0
    assert models.load(str(out / "model")).fingerprint() == fp


# ----------------------------------------------------------------------------- item 7: one line, not a traceback
def _enospc(*a, **k):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_the_report_is_one_line_and_keeps_the_previous_page(tmp_path, monkeypatch):
    from vlkit import report
    from vlkit.engine import checkpoint as ckpt

    (tmp_path / "metrics.json").write_text('{"metrics": {"retrieval/i2t_R@1": 0.5}}')
    page = report.write(tmp_path)
    before = page.read_bytes()

    class FullFile:
        def __init__(self, path, mode):
            self.f = open(path, mode)

        def write(self, data):
            self.f.write(data[:100])
            _enospc()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(ckpt, "open", FullFile, raising=False)
    with pytest.raises(UserError, match=r"disk full: could not write report .*report.html") as e:
        report.write(tmp_path)
    assert "\n" not in str(e.value)
    assert page.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.html"]


def test_disk_full_anywhere_in_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    import vlkit.cli

    monkeypatch.setattr(vlkit.cli, "_models_list", _enospc)
    assert main(["models", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlkit: error: disk full") and len(err.strip().splitlines()) == 1


def test_a_refused_pickle_through_hf_or_a_timm_file_is_one_line(tmp_path):
    import pickle

    import torch

    from vlkit import models

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"weight": RunsCode()}, tmp_path / "evil.pth")
    cfg = {"image_size": 32, "embed_dim": 16,
           "vision": {"type": "timm", "name": "test_resnet", "pretrained_file": str(tmp_path / "evil.pth")},
           "text": {"type": "openclip_text", "cfg": {"width": 32, "heads": 2, "layers": 1, "context_length": 12}}}
    with pytest.raises(UserError, match=r"timm weights file .*evil.pth: its weights are a pickle .* never unpickles") as e:
        models.load(cfg)
    assert "\n" not in str(e.value)

    from hf_tiny import _TEXT, _VISION, _save_tokenizer
    from transformers import CLIPConfig, CLIPModel

    hf = tmp_path / "hf"
    CLIPModel(CLIPConfig(text_config=_TEXT, vision_config=_VISION, projection_dim=16)).save_pretrained(str(hf))
    _save_tokenizer(hf, 12)
    (hf / "model.safetensors").unlink()
    with open(hf / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": RunsCode()}, f)
    with pytest.raises(UserError, match=r"Hugging Face model .*hf: its weights are a pickle") as e:
        models.load(f"hf:{hf}")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ran").exists()  # nothing was unpickled


def test_ctrl_c_anywhere_in_the_cli_is_one_line_and_exit_130(monkeypatch, capsys):
    import vlkit.cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(vlkit.cli, "_add_models", interrupted)  # while the parser imports and builds
    assert main(["models", "list"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("vlkit: interrupted") and len(err.strip().splitlines()) == 1
    monkeypatch.undo()

    def cleanup_fails_as_ctrl_c_unwinds(*a, **k):  # as torch.save's zip writer does
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("unexpected pos 531520 vs 531408")

    monkeypatch.setattr(vlkit.cli, "_models_list", cleanup_fails_as_ctrl_c_unwinds)
    assert main(["models", "list"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("vlkit: interrupted") and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(vlkit.cli, "_models_list", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug stays a traceback: it is not a Ctrl-C
        main(["models", "list"])


def test_ctrl_c_during_a_real_pretrain_run_is_one_line_exit_130_and_resumable(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_vlkit("pretrain", "configs/pretrain/shapes-clip.yaml", *TINY, "engine.steps=100000",
                                   "engine.checkpoint_every=2", f"out_dir={out}"),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(read_metrics(out / "metrics.jsonl")) >= 1, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("vlkit: interrupted")
    assert not (out / lock.LOCK_FILE).exists()  # released on the way out
    resumed = subprocess.run(_vlkit("pretrain", "configs/pretrain/shapes-clip.yaml", *TINY, "engine.steps=100000",
                                    "time_budget_s=0.5", f"out_dir={out}", "--resume"),
                             cwd=ROOT, env=_env(), capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "took over the lock" not in resumed.stderr.decode()


def test_data_export_cli_prints_what_it_wrote_and_overwrites_only_when_asked(tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["data", "export", "digits", str(out), "--format", "imagefolder", "--split", "test"]) == 0
    first = capsys.readouterr().out
    assert main(["data", "export", "digits", str(out), "--format", "imagefolder", "--split", "test"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["data", "export", "digits", str(out), "--format", "imagefolder", "--split", "test",
                 "--overwrite"]) == 0
    again = capsys.readouterr().out
    n = len(list(out.rglob("*.png")))
    assert first == again == f"wrote {n} samples as imagefolder to {out}\n"


def test_eval_and_adapt_into_a_locked_folder_are_refused_before_they_write(tmp_path):
    """`vlkit eval --out` and `vlkit adapt --out` take the same lock as pretrain: a second run into
    a folder in use is refused in one line, and neither the metrics nor adapt_config.yaml appear."""
    from vlkit import adapt, evaluate

    out = tmp_path / "out"
    with _lock_holder(out) as holder:
        with pytest.raises(UserError, match=rf"in use by another vlkit run \(PID {holder.pid}\)"):
            evaluate.run("preset:tiny-clip", "digits", ["zeroshot"], out_dir=out)
        with pytest.raises(UserError, match=rf"in use by another vlkit run \(PID {holder.pid}\)"):
            adapt.run("zeroshot", "digits", "preset:tiny-clip", out=str(out), shots=[1], seeds=[1])
        assert sorted(p.name for p in out.iterdir()) == [lock.LOCK_FILE]
    with pytest.warns(UserWarning, match=f"took over the lock of {out} from PID {holder.pid}"):
        evaluate.run("preset:tiny-clip", "digits", ["zeroshot"], out_dir=out)  # free again: it runs and writes
    assert {"metrics.json", "artifacts.json", "metrics.md"} <= {p.name for p in out.iterdir()}
    assert not (out / lock.LOCK_FILE).exists()


def test_a_sigkilled_adapt_grid_keeps_its_finished_cells_and_the_same_command_resumes_it(tmp_path):
    """Issue 17: `vlkit adapt` killed with SIGKILL mid-grid; rerun, it reuses what finished."""
    out = tmp_path / "grid"
    cmd = _vlkit("adapt", "--method", "coop", "--data", "digits", "--model", "preset:tiny-clip", "--shots", "1",
                 "--seeds", "1,2,3,4,5,6", "--views", "1", "--out", str(out), "epochs=3", "n_ctx=2")
    first = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: any(out.rglob("cell.json")), first, timeout=300)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    done = sorted(p.parent.name for p in out.rglob("cell.json"))
    assert 1 <= len(done) < 6 and not (out / "results-fewshot.json").exists()
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, timeout=600)
    err = again.stderr.decode()
    assert again.returncode == 0, err[-2000:]
    assert f"{len(done)} of 6 cells finished earlier are reused" in err
    table = json.loads((out / "results-fewshot.json").read_text())
    assert sorted(r["seed"] for r in table["records"]) == [1, 2, 3, 4, 5, 6]
    assert (out / "report.html").is_file()
