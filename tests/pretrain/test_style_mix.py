"""Style randomisation in pretraining (data.style_mix): the collate redraws each sample in a
style chosen by (seed, epoch, index), the same with any worker count, new each epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlkit import pretrain
from vlkit.data import Sample
from vlkit.data.collate import Collate
from vlkit.data.styles import StyleMix, image_seed, restyle
from vlkit.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["engine.progress=false", "engine.tensorboard=false", "engine.checkpoint_every=0"]


def sample(i: int) -> Sample:
    a = np.full((16, 16, 3), 255, np.uint8)
    a[4:12, 4:12] = 0
    a[6:10, 6:10] = (200, 50, 50)
    return Sample(Image.fromarray(a), [f"thing {i}"], 0, {}, {"index": i})


def test_collate_restyles_by_seed_epoch_and_index():
    batch = [sample(i) for i in range(40)]
    mix = StyleMix(p=0.75, seed=3)
    first = Collate(None, caption="first", seed=3, restyle=mix)(batch)["images"]
    again = Collate(None, caption="first", seed=3, restyle=StyleMix(p=0.75, seed=3))(batch)["images"]
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]
    picked = [mix.pick(0, i) for i in range(40)]
    assert len(set(picked)) >= 5
    for i, style in enumerate(picked):  # each image is its sample drawn in the picked style
        seed = image_seed(3, f"0:{i}")
        expect = batch[i].image if style == "original" else restyle(batch[i].image, style, seed)
        assert first[i].tobytes() == expect.tobytes(), (i, style)
    later = Collate(None, caption="first", seed=3, restyle=mix)
    later.set_epoch(1)
    assert [im.tobytes() for im in later(batch)["images"]] != [im.tobytes() for im in first]
    plain = Collate(None, caption="first", seed=3)(batch)["images"]
    assert all(im.tobytes() == batch[i].image.tobytes() for i, im in enumerate(plain))


@pytest.mark.parametrize("override, message", [
    ("data.style_mix=1.5", "data.style_mix is a probability"),
    ("data.styles=[sketch]", "unknown style 'sketch'"),
])
def test_bad_style_mix_settings_are_one_line(tmp_path, override, message):
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit.yaml", [override, f"out_dir={tmp_path}", *QUICK])
    with pytest.raises(UserError, match=message):
        pretrain.run(cfg)


def test_pretraining_with_style_mix_draws_restyled_images(tmp_path, monkeypatch):
    from vlkit.data import styles

    calls = []
    real = styles.STYLES["edges"]
    monkeypatch.setitem(styles.STYLES, "edges", lambda img, seed: calls.append(seed) or real(img, seed))
    cfg = pretrain.load_config(ROOT / "configs/pretrain/moji-lit.yaml", [
        "data.max_samples=16", "engine.steps=2", "engine.batch_size=8", "engine.schedule.warmup_steps=1",
        "data.style_mix=1.0", "data.styles=[edges]", "eval.data=null", f"out_dir={tmp_path}", *QUICK])
    result = pretrain.run(cfg)
    assert result.fit.step == 2 and len(calls) == 16  # every image of both batches, in edges
