"""Transforms, collate and the resumable loader."""

from __future__ import annotations

import torch

from vlkit import data
from vlkit.data.collate import collate_fn
from vlkit.data.loader import make_loader
from vlkit.data.transforms import image_transform

MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


def _small():
    return data.load("digits", split="val")


def test_transform_outputs_and_repr():
    ds = _small()
    ev = image_transform(24, MEAN, STD)
    tr = image_transform(24, MEAN, STD, train=True)
    x = ev(ds[0].image)
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert torch.equal(x, ev(ds[0].image))
    assert repr(ev) == repr(image_transform(24, MEAN, STD)) != repr(tr)
    assert "hflip=False" in repr(tr) and "hflip=True" in repr(image_transform(24, MEAN, STD, train=True, hflip=True))


def test_collate_modes():
    ds = _small()
    batch = [ds[i] for i in range(3)]
    tf = image_transform(16, MEAN, STD)
    first = collate_fn(tf, "first")(batch)
    assert first["images"].shape == (3, 3, 16, 16) and first["labels"].tolist() == [s.label for s in batch]
    assert first["texts"] == [s.captions[0] for s in batch] and first["index"].tolist() == [0, 1, 2]
    every = collate_fn(tf, "all")(batch)
    assert len(every["texts"]) == sum(len(s.captions) for s in batch)
    assert every["text_index"].tolist() == [b for b, s in enumerate(batch) for _ in s.captions]
    rnd = [collate_fn(tf, "random", seed=s)(batch)["texts"] for s in range(6)]
    assert rnd[0] == collate_fn(tf, "random", seed=0)(batch)["texts"]
    assert len({tuple(t) for t in rnd}) > 1  # the seed changes the choice


def test_train_augmentation_is_seeded_per_sample_and_leaves_the_callers_rng_alone():
    ds = _small()
    batch = [ds[i] for i in range(4)]
    tf = image_transform(16, MEAN, STD, train=True, scale=(0.3, 1.0))
    collate = collate_fn(tf, "first", seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    images = collate(batch)["images"]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream goes on as if untouched
    assert torch.equal(images, collate(batch)["images"])  # the same crops for the same (seed, epoch, index)
    # each sample's crop is the transform under torch's generator seeded from (seed, epoch, index)
    from vlkit.data.collate import _seed

    for i, sample in enumerate(batch):
        torch.manual_seed(_seed("aug", 5, 0, i))
        assert torch.equal(images[i], tf(sample.image))
    collate.set_epoch(1)
    assert not torch.equal(images, collate(batch)["images"])  # a new epoch draws new crops


def _run(loader, n_batches):
    out = []
    for _ in range(n_batches):
        for batch in loader:
            out.append((batch["index"].tolist(), batch["texts"], batch["images"].sum().item()))
            if len(out) == n_batches:
                return out
    return out


def test_loader_resumes_exactly_where_it_stopped():
    ds = _small().subset(range(40))
    tf = image_transform(16, MEAN, STD, train=True, scale=(0.5, 1.0))
    full = _run(make_loader(ds, 16, tf, seed=3), 7)  # 3 batches/epoch: crosses two epochs
    first = make_loader(ds, 16, tf, seed=3)
    head = _run(first, 4)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batch_index"] == 1
    resumed = make_loader(ds, 16, tf, seed=3)
    resumed.load_state_dict(state)
    assert head + _run(resumed, 3) == full
    epoch0 = sorted(i for idx, _, _ in full[:3] for i in idx)
    assert epoch0 == list(range(40)) and full[0][0] != full[3][0]  # a new order each epoch


def test_worker_processes_draw_the_same_batches_as_the_main_process():
    # the per-sample reseed makes augmentations independent of which process collates: a run
    # with DataLoader workers, and one resumed mid-epoch with them, sees exactly the same batches
    from vlkit.engine import DatasetBatches

    ds = _small().subset(range(24))
    tf = image_transform(16, MEAN, STD, train=True, scale=(0.3, 1.0))

    def batches(workers, epoch, start):
        source = DatasetBatches(ds, 8, collate_fn(tf, "random", seed=2), seed=2, num_workers=workers)
        return [(b["index"].tolist(), b["texts"], b["images"]) for b in source.batches(epoch, start)]

    main, workers = batches(0, 1, 0), batches(2, 1, 0)
    assert [b[:2] for b in main] == [b[:2] for b in workers]
    assert all(torch.equal(m[2], w[2]) for m, w in zip(main, workers))
    resumed = batches(2, 1, 1)
    assert all(torch.equal(m[2], r[2]) for m, r in zip(main[1:], resumed)) and len(resumed) == 2
