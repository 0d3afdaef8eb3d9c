"""``--launch auto``: run the same command under torchrun over every visible GPU.

As in sentence-transformers, ``per_device_train_batch_size`` is each process's batch: N processes train on
N times that (the losses gather the in-batch negatives of every process). Already inside torchrun
(``LOCAL_RANK`` set), or with fewer than two GPUs, nothing is re-launched.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def detect_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken CUDA install counts as no GPU
        return 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def strip_launch(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--launch X`` / ``--launch=X`` (the child must not re-launch)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--launch":
            skip = True
            continue
        if arg.startswith("--launch="):
            continue
        out.append(arg)
    return out


def torchrun_command(nproc: int, argv: Sequence[str], nnodes: int = 1) -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node=N -m ragcun <argv>``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes == 1:
        cmd.append("--standalone")
    return [*cmd, "-m", "ragcun", *strip_launch(argv)]


def plan_launch(mode: str) -> int:
    """How many processes to launch for ``mode`` (``no``, ``auto`` or an integer); 0 means run here."""
    if mode in ("no", "none", "", "0", "1") or under_torchrun():
        return 0
    if mode != "auto" and not (mode.isdigit() and int(mode) > 0):
        raise ValueError(f"--launch must be 'auto', 'no' or a number of processes, got {mode!r}")
    n = detect_gpus() if mode == "auto" else int(mode)
    if n < 2:
        if mode == "auto":
            logger.info("--launch auto: %d GPU(s) visible; running in this process", n)
        return 0
    return n


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run ``ragcun <argv>`` under torchrun with ``nproc`` processes; returns its exit code."""
    cmd = torchrun_command(nproc, argv)
    logger.info("launching %d processes: %s", nproc, " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // nproc)))
    if shutil.which(sys.executable) is None:  # pragma: no cover
        raise RuntimeError("cannot find the Python interpreter to launch torchrun with")
    return subprocess.call(cmd, env=env)
