"""Two gloo processes on half a batch each give the single-process gradient of the whole batch.

DDP averages parameter gradients over ranks, so the gradient a model receives is
``(1 / W) * sum over ranks`` of what each rank back-propagates. For the features (each rank owns
its slice) that means ``grad_rank_r / W`` must equal the single-process gradient of those rows;
for the replicated ``logit_scale`` / ``logit_bias``, the mean over ranks must equal it. The mean
of the per-rank losses must equal the single-process loss.
"""

import datetime
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlkit.objectives import create

WORLD, BATCH, DIM, CAPTIONS = 2, 8, 4, 2
CASES = {  # name -> (objective, options, texts per image)
    "clip": ("clip", {}, 1),
    "clip_local": ("clip", {"local_loss": True}, 1),
    "lightclip_local": ("lightclip", {"local_loss": True, "eps_max": 0.2}, 1),
    "siglip": ("siglip", {}, 1),
    "sail": ("sail", {}, CAPTIONS),
}


def global_batch(texts_per_image):
    g = torch.Generator().manual_seed(1234)
    img = F.normalize(torch.randn(BATCH, DIM, generator=g), dim=-1)
    txt = F.normalize(torch.randn(BATCH * texts_per_image, DIM, generator=g), dim=-1)
    return img, txt


def run_case(case, img, txt):
    """Loss and gradients (features, scale, bias) for the rows given, on this process."""
    name, options, _ = CASES[case]
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale = torch.tensor(math.log(5.0), requires_grad=True)
    bias = torch.tensor(-2.0, requires_grad=True)
    loss = create(name, options)(img, txt, scale, bias, progress=0.5)["contrastive_loss"]
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad,
            "scale": scale.grad, "bias": bias.grad if bias.grad is not None else torch.tensor(0.0)}


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for case, (_, _, per_image) in CASES.items():
            img, txt = global_batch(per_image)
            b, t = BATCH // WORLD, BATCH * per_image // WORLD
            mine = img[rank * b:(rank + 1) * b], txt[rank * t:(rank + 1) * t]  # this rank's half
            results[case] = run_case(case, *mine)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_process(rank_results, case):
    single = run_case(case, *global_batch(CASES[case][2]))
    ranks = [r[case] for r in rank_results]
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    assert torch.allclose(mean_loss, single["loss"], atol=1e-5)
    for key in ("img", "txt"):
        gathered = torch.cat([r[key] for r in ranks]) / WORLD
        assert torch.allclose(gathered, single[key], atol=1e-5), key
    for key in ("scale", "bias"):
        averaged = sum(r[key] for r in ranks) / WORLD
        assert torch.allclose(averaged, single[key], atol=1e-5), key
