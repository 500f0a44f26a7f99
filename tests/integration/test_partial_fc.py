"""PartialFC against a single-process MarginHead, with two real gloo processes on loopback."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from arcflow.heads.margins import MarginHead
from arcflow.heads.partial_fc import PartialFC, init_centres, shard_range
from infra.local.processes import free_port

pytestmark = [pytest.mark.integration]

WORLD = 2
SEED = 1234
DIM = 8
IN_DIM = 5
LOCAL_BATCH = (4, 3)  # uneven on purpose: the all-gather supports it
NUM_CLASSES = 11  # shards of 6 and 5 classes
# (m1, m2, m3, straight_through): ArcFace, combined with arccos, CosFace, straight-through
MARGINS = [(1.0, 0.5, 0.0, False), (1.35, 0.2, 0.1, False), (1.0, 0.0, 0.35, False)]
MARGINS += [(1.0, 0.5, 0.0, True)]
SCALE = 8.0
TOL = 1e-6

# Sampled scenario: 40 classes → 20 per rank, 5 sampled per rank at rate 0.25.
SAMPLED_CLASSES = 40
SAMPLED_RATE = 0.25
SAMPLED_STEPS = [[1, 3, 25, 3, 30, 7], [11, 12, 38, 39, 21, 0]]  # global labels per step
LR, MOMENTUM, WD = 0.5, 0.9, 5e-2


def _backbone() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(IN_DIM, DIM), nn.Tanh(), nn.Linear(DIM, DIM)).double()


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 1)
    n = sum(LOCAL_BATCH)
    inputs = torch.randn(n, IN_DIM, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return inputs, labels


def _local(tensor: torch.Tensor, rank: int) -> torch.Tensor:
    start = sum(LOCAL_BATCH[:rank])
    return tensor[start : start + LOCAL_BATCH[rank]]


def _full_softmax_case(rank: int) -> list[dict[str, Any]]:
    inputs, labels = _global_batch()
    out = []
    for m1, m2, m3, straight in MARGINS:
        backbone = _backbone()
        head = PartialFC(
            DIM,
            NUM_CLASSES,
            s=SCALE,
            m1=m1,
            m2=m2,
            m3=m3,
            straight_through=straight,
            seed=SEED,
        ).double()
        emb = backbone(_local(inputs, rank))
        emb.retain_grad()
        loss = head(emb, _local(labels, rank))
        loss.backward()
        out.append(
            {
                "loss": loss.detach(),
                "emb_grad": emb.grad,
                "backbone_grads": [p.grad.clone() for p in backbone.parameters()],
                "shard_grad": head.shard_grad(),
                "class_start": head.class_start,
                "num_local": head.num_local,
            }
        )
    return out


def _sampled_case(rank: int) -> dict[str, Any]:
    torch.manual_seed(SEED)
    head = PartialFC(DIM, SAMPLED_CLASSES, s=SCALE, m2=0.5, sample_rate=SAMPLED_RATE, seed=SEED)
    head = head.double()
    weights = [head.weight.clone()]
    buffers = [head.momentum_buffer.clone()]
    indices = []
    for step_labels in SAMPLED_STEPS:
        labels = torch.tensor(step_labels)[rank * 3 : rank * 3 + 3]
        emb = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
        head(emb, labels).backward()
        assert head.last_index is not None
        indices.append(head.last_index.clone())
        assert head.step(LR, momentum=MOMENTUM, weight_decay=WD)
        weights.append(head.weight.clone())
        buffers.append(head.momentum_buffer.clone())
    return {
        "class_start": head.class_start,
        "num_local": head.num_local,
        "num_sample": head.num_sample,
        "weights": weights,
        "buffers": buffers,
        "indices": indices,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=30))
    try:
        result = {"full": _full_softmax_case(rank), "sampled": _sampled_case(rank)}
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(out_dir: Path, timeout: float = 60.0) -> None:
    """Run :func:`_worker` on ``WORLD`` spawned processes; kill them on failure or timeout."""
    ctx = mp.start_processes(
        _worker,
        args=(free_port(), str(out_dir)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"distributed PartialFC workers still running after {timeout}s")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("partial_fc")
    _spawn(out_dir)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _reference(m1: float, m2: float, m3: float, straight: bool) -> dict[str, Any]:
    """The same step on one process: MarginHead with the full matrix, global batch."""
    inputs, labels = _global_batch()
    backbone = _backbone()
    head = MarginHead(DIM, NUM_CLASSES, s=SCALE, m1=m1, m2=m2, m3=m3, straight_through=straight)
    head = head.double()
    with torch.no_grad():
        head.weight.copy_(init_centres(NUM_CLASSES, DIM, SEED))
    emb = backbone(inputs)
    emb.retain_grad()
    loss = F.cross_entropy(head(emb, labels), labels)
    loss.backward()
    return {
        "loss": loss.detach(),
        "emb_grad": emb.grad,
        "backbone_grads": [p.grad for p in backbone.parameters()],
        "weight_grad": head.weight.grad,
    }


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol, (a, b)


@pytest.mark.parametrize("case", range(len(MARGINS)), ids=[str(m) for m in MARGINS])
def test_world2_full_rate_matches_single_process_margin_head(
    dist_results: list[dict[str, Any]], case: int
) -> None:
    ref = _reference(*MARGINS[case])
    per_rank = [result["full"][case] for result in dist_results]
    # the shards tile the class range in rank order
    assert [(r["class_start"], r["num_local"]) for r in per_rank] == [(0, 6), (6, 5)]
    weight_grad = torch.cat([r["shard_grad"] for r in per_rank])
    _close(weight_grad, ref["weight_grad"])
    for rank, r in enumerate(per_rank):
        _close(r["loss"], ref["loss"])  # every rank returns the global mean loss
        # convention: the all-gather backward multiplies this rank's rows by the world size
        _close(r["emb_grad"] / WORLD, _local(ref["emb_grad"], rank))
    # DDP averages backbone gradients over ranks; the average is the single-process gradient
    for i, ref_grad in enumerate(ref["backbone_grads"]):
        mean_grad = sum(r["backbone_grads"][i] for r in per_rank) / WORLD
        _close(mean_grad, ref_grad)


def test_world2_sampled_step_leaves_unsampled_centres_untouched(
    dist_results: list[dict[str, Any]],
) -> None:
    results = [r["sampled"] for r in dist_results]
    for rank, result in enumerate(results):
        start, num_local = result["class_start"], result["num_local"]
        assert (start, num_local) == shard_range(SAMPLED_CLASSES, WORLD, rank)
        assert result["num_sample"] == 5
        full = init_centres(SAMPLED_CLASSES, DIM, SEED, start, start + num_local)
        assert torch.equal(result["weights"][0], full.double())
        for step, labels in enumerate(SAMPLED_STEPS):
            index = result["indices"][step]
            positives = {y - start for y in labels if start <= y < start + num_local}
            sampled = set(index.tolist())
            assert positives <= sampled  # every positive of the global batch was sampled
            assert len(sampled) == max(5, len(positives))
            unsampled = sorted(set(range(num_local)) - sampled)
            before, after = result["weights"][step], result["weights"][step + 1]
            buf_before, buf_after = result["buffers"][step], result["buffers"][step + 1]
            # unsampled centres: weights and momentum bit-for-bit unchanged
            assert torch.equal(after[unsampled], before[unsampled])
            assert torch.equal(buf_after[unsampled], buf_before[unsampled])
            # sampled centres moved and their momentum was updated
            rows = index.tolist()
            assert (after[rows] != before[rows]).any(dim=1).all()
            assert (buf_after[rows] != buf_before[rows]).any(dim=1).all()
    # the two steps drew different random samples on at least one rank
    assert any(not torch.equal(r["indices"][0], r["indices"][1]) for r in results)


def test_single_process_full_rate_matches_margin_head() -> None:
    for m1, m2, m3, straight in MARGINS:
        head = PartialFC(
            DIM, NUM_CLASSES, s=SCALE, m1=m1, m2=m2, m3=m3, straight_through=straight, seed=SEED
        ).double()
        ref = MarginHead(DIM, NUM_CLASSES, s=SCALE, m1=m1, m2=m2, m3=m3, straight_through=straight)
        ref = ref.double()
        with torch.no_grad():
            ref.weight.copy_(head.weight)
        inputs, labels = _global_batch()
        emb = inputs @ torch.randn(IN_DIM, DIM, dtype=torch.float64)
        emb.requires_grad_(True)
        loss = head(emb, labels)
        loss.backward()  # (autograd.grad would not fill the centres' gradient)
        grad, emb.grad = emb.grad, None
        ref_loss = F.cross_entropy(ref(emb, labels), labels)
        ref_grad, ref_weight_grad = torch.autograd.grad(ref_loss, (emb, ref.weight))
        _close(loss, ref_loss, 1e-12)
        _close(grad, ref_grad, 1e-12)
        _close(head.shard_grad(), ref_weight_grad, 1e-12)


def test_single_process_gradcheck() -> None:
    head = PartialFC(DIM, NUM_CLASSES, s=SCALE, m1=1.35, m2=0.2, m3=0.1, seed=SEED).double()
    inputs, labels = _global_batch()
    emb = (inputs @ torch.randn(IN_DIM, DIM, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: head(e, labels), (emb,))
    head.zero_grad()


def test_full_rate_step_matches_torch_sgd() -> None:
    """At sample_rate 1 every centre is sampled, so step() is exactly torch.optim.SGD."""
    head = PartialFC(DIM, NUM_CLASSES, s=SCALE, m2=0.5, seed=SEED).double()
    ref = MarginHead(DIM, NUM_CLASSES, s=SCALE, m2=0.5).double()
    with torch.no_grad():
        ref.weight.copy_(head.weight)
    opt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(3):
        emb = torch.randn(6, DIM, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, NUM_CLASSES, (6,), generator=gen)
        head(emb, labels).backward()
        head.step(LR, momentum=MOMENTUM, weight_decay=WD)
        opt.zero_grad()
        F.cross_entropy(ref(emb, labels), labels).backward()
        opt.step()
        _close(head.weight, ref.weight.detach(), 1e-12)
        _close(head.momentum_buffer, opt.state[ref.weight]["momentum_buffer"], 1e-12)
    assert list(head.parameters()) == []  # nothing for the main optimiser


def _sampled_run(head: PartialFC, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    indices = []
    for _ in range(steps):
        emb = torch.randn(4, DIM, generator=gen)
        labels = torch.randint(0, head.num_classes, (4,), generator=gen)
        head(emb, labels).backward()
        assert head.last_index is not None
        indices.append(head.last_index.clone())
        head.step(0.1, momentum=0.9, weight_decay=5e-4)
    return indices


def test_state_dict_round_trip_resumes_identical_sampling(tmp_path: Path) -> None:
    head = PartialFC(DIM, 100, s=SCALE, m2=0.5, sample_rate=0.1, seed=SEED)
    gen = torch.Generator().manual_seed(0)
    _sampled_run(head, 2, gen)
    torch.save(head.state_dict(), tmp_path / "pfc.pt")
    data_state = gen.get_state()
    expected = _sampled_run(head, 3, gen)

    resumed = PartialFC(DIM, 100, s=SCALE, m2=0.5, sample_rate=0.1, seed=SEED + 99)
    resumed.load_state_dict(torch.load(tmp_path / "pfc.pt", weights_only=True))
    assert resumed.sample_step == 2
    assert torch.any(resumed.momentum_buffer != 0)
    gen.set_state(data_state)
    got = _sampled_run(resumed, 3, gen)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert torch.equal(resumed.weight, head.weight)
    assert torch.equal(resumed.momentum_buffer, head.momentum_buffer)
    # a different random sample each step
    assert len({tuple(i.tolist()) for i in expected}) == 3


def test_state_dict_rejects_another_shard() -> None:
    state = PartialFC(DIM, 100, seed=SEED).state_dict()
    with pytest.raises(ValueError, match="num_classes"):
        PartialFC(DIM, 101, seed=SEED).load_state_dict(state)
