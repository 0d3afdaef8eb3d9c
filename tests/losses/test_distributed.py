"""A real 2-process gloo run gives the same SIGReg / objective value and gradients as one process
on the concatenated batch (after DDP-style gradient averaging)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ragcun.losses import IsotropicGaussianLoss, SIGReg

N, D, WORLD = 24, 12, 2


def _inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen) * 1.3 + 0.2
    q = torch.randn(N, D, generator=gen)
    p = q + 0.3 * torch.randn(N, D, generator=gen)
    n = torch.randn(N, D, generator=gen)
    return x, q, p, n


def _layer():
    torch.manual_seed(1)
    return torch.nn.Linear(D, D)


class _NoModel(torch.nn.Module):
    pass


def _compute(x, q, p, n, distributed: bool):
    """SIGReg on layer(x) and the full objective (gathered negatives) on layer(q), layer(p), layer(n)."""
    layer = _layer()
    sig = SIGReg(num_slices=64, seed=3)
    value = sig(layer(x), distributed=distributed)
    value.backward()
    sig_grad = layer.weight.grad.clone()

    layer.zero_grad()
    loss = IsotropicGaussianLoss(_NoModel(), lambda_isotropy=0.7, num_slices=64,
                                 gather_across_devices=distributed, seed=4)
    out = loss.compute_loss_from_embeddings([layer(q), layer(p), layer(n)])
    total = sum(out.values())
    total.backward()
    obj_grad = layer.weight.grad.clone()
    if distributed:  # what DDP does to parameter gradients
        for g in (sig_grad, obj_grad):
            dist.all_reduce(g)
            g /= dist.get_world_size()
        total_avg = total.detach().clone()
        dist.all_reduce(total_avg)
        total_avg /= dist.get_world_size()
        total = total_avg
    return value.item(), sig_grad.numpy(), total.item(), obj_grad.numpy()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, q, p, n = _inputs()
        sl = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        value, sig_grad, total, obj_grad = _compute(x[sl], q[sl], p[sl], n[sl], distributed=True)
        np.save(os.path.join(out_dir, f"rank{rank}_sig_grad.npy"), sig_grad)
        np.save(os.path.join(out_dir, f"rank{rank}_obj_grad.npy"), obj_grad)
        np.save(os.path.join(out_dir, f"rank{rank}_values.npy"), np.array([value, total]))
        dist.barrier()  # both ranks done before teardown: gloo aborts a rank torn down mid-exchange
    finally:
        dist.destroy_process_group()
    # Results are on disk; skip interpreter teardown, where a gloo/OpenMP thread still being joined
    # intermittently aborts the child ("terminate called without an active exception", SIGABRT).
    os._exit(0)


@pytest.mark.timeout(180)
def test_two_process_gloo_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    value, sig_grad, total, obj_grad = _compute(*_inputs(), distributed=False)
    for r in range(WORLD):
        v = np.load(tmp_path / f"rank{r}_values.npy")
        assert v[0] == pytest.approx(value, rel=1e-5), "SIGReg value differs from the global batch"
        assert v[1] == pytest.approx(total, rel=1e-5), "objective differs from the global batch"
        np.testing.assert_allclose(np.load(tmp_path / f"rank{r}_sig_grad.npy"), sig_grad, rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(np.load(tmp_path / f"rank{r}_obj_grad.npy"), obj_grad, rtol=1e-4,
                                   atol=1e-6)


STEPS, QN = 3, 8  # three training steps of a global batch of 8 triplets


def _queue_batches():
    gen = torch.Generator().manual_seed(7)
    return [tuple(torch.randn(QN, D, generator=gen) * s for s in (1.0, 1.2, 0.8)) for _ in range(STEPS)]


def _queue_run(batches, distributed: bool, queue_size: int = 64):
    """The SIGReg statistic of each step with a 64-row queue (pca slices, queries and documents apart)."""
    layer = _layer()
    loss = IsotropicGaussianLoss(_NoModel(), lambda_isotropy=1.0, num_slices=32, seed=4,
                                 queue_size=queue_size, slice_policy="pca", principal_slices=4,
                                 sigreg_on="separate")
    values = []
    for q, p, n in batches:
        loss.compute_loss_from_embeddings([layer(q), layer(p), layer(n)])
        values.append(loss.last_stats["sigreg"])
    return values, (int(loss.queue.filled)
                    * (dist.get_world_size() if distributed else 1)) if loss.queue else 0


def _queue_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        sl = slice(rank * QN // WORLD, (rank + 1) * QN // WORLD)
        values, filled = _queue_run([tuple(t[sl] for t in b) for b in _queue_batches()], distributed=True)
        np.save(os.path.join(out_dir, f"rank{rank}_queue.npy"), np.array([*values, filled], dtype=np.float64))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)


@pytest.mark.timeout(180)
def test_queue_under_ddp_equals_one_process_with_the_whole_queue(tmp_path):
    """Each rank keeps its share of the queue; the statistic (characteristic function summed over ranks,
    principal axes from the summed covariance) equals one process's on the global batches and the whole
    queue."""
    mp.spawn(_queue_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    values, filled = _queue_run(_queue_batches(), distributed=False)
    assert filled == STEPS * 2 * QN  # every document row of every step is in the one queue
    without, _ = _queue_run(_queue_batches(), distributed=False, queue_size=0)
    assert values[0] == pytest.approx(without[0]) and values[-1] != pytest.approx(without[-1], rel=1e-3)
    for r in range(WORLD):
        got = np.load(tmp_path / f"rank{r}_queue.npy")
        np.testing.assert_allclose(got[:-1], values, rtol=1e-5)
        assert got[-1] == filled
