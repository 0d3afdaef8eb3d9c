"""Small torch.distributed helpers that are safe to call in a single process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across ranks, keeping autograd: the backward sums the incoming gradients.

    With every rank computing the same global loss, each rank's local gradient comes out
    ``world_size`` times the single-process gradient, which DDP's gradient averaging then
    divides back out: parameter gradients equal those of one process on the global batch.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, with gradients flowing back to each rank."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def init_from_env() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1) unless already in one; True when
    distributed.

    gloo on CPUs, NCCL on GPUs (each process on ``cuda:LOCAL_RANK``); the rendezvous (one node or many) is
    torchrun's: ``MASTER_ADDR``/``MASTER_PORT`` or its c10d endpoint.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def local_device() -> str | None:
    """This process's GPU under torchrun (``cuda:LOCAL_RANK``), or None (let the library choose)."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


def shutdown(wait: bool = True) -> None:
    """Leave the process group, after every rank is done with ``wait`` (gloo aborts a rank torn down
    mid-exchange); ``wait=False`` after an error, which the other ranks may never reach."""
    if is_distributed():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
