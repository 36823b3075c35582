"""Training steps per second of moji-lit vs moji-lit-deep, interleaved in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/moji_lit_step_speed.py [--rounds 6] [--steps 5]

Both models train on the same batch of 128 OpenMoji training images (crops at scale 0.9-1) and
their MiniLM name features (the text tower is frozen and cached in both recipes): moji-lit
(``preset:moji-lit-effnet``) runs its whole image tower each step, frozen stages included;
moji-lit-deep runs only its four blocks on the frozen stages' output, computed once per view
as its recipe caches it. Rounds alternate ``--steps`` steps of each (AdamW, CLIP loss), so a
loaded machine slows both alike; the script prints each model's median seconds per step and the
ratio. Data loading is left out (moji-lit's loader also decodes and crops 128 images a step,
moji-lit-deep's reads cached rows): ``vlkit pretrain`` runs measure that part.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def _step(model, opt, image_fn, text_pooled) -> None:
    img = F.normalize(model.image_proj(image_fn()), dim=-1)  # (B, D)
    txt = F.normalize(model.project_text(text_pooled, normalize=False), dim=-1)  # (B, D)
    logits = model.logit_scale.exp() * img @ txt.T  # (B, B)
    labels = torch.arange(len(logits))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=5, help="steps of each model per round")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)

    from vlkit import data, models
    from vlkit.data.transforms import image_transform

    ds = data.load("openmoji", split="train", skin_tones=False)
    shallow, deep = models.load("preset:moji-lit-effnet"), models.load("preset:moji-lit-deep")
    tf = image_transform(64, shallow.mean, shallow.std, train=True, scale=(0.9, 1.0))
    images = torch.stack([tf(ds[i].image) for i in range(args.batch)])  # (B, 3, 64, 64)
    with torch.no_grad():
        text = shallow.encode_text_pooled([ds.captions_at(i)[0] for i in range(args.batch)])  # (B, 384)
        stage = deep.visual.frozen_stage(images)  # (B, 112, 4, 4): what the recipe caches
    runs = {"moji-lit": (shallow, lambda: shallow.visual(images)),
            "moji-lit-deep": (deep, lambda: deep.visual.forward_from_stage(stage))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    opts = {}
    for name, (model, _) in runs.items():
        model.train()
        opts[name] = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    for r in range(args.rounds + 1):  # round 0 warms up, not counted
        for name, (model, fn) in runs.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                _step(model, opts[name], fn, text)
                if r:
                    times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name}: {len(t)} steps of {args.batch}, median {med[name]:.3f} s/step "
              f"({1 / med[name]:.2f} steps/s), min {min(t):.3f}, max {max(t):.3f}")
    print(f"moji-lit-deep / moji-lit steps/s: {med['moji-lit'] / med['moji-lit-deep']:.2f}x")


if __name__ == "__main__":
    main()
