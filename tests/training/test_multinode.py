"""A real two-node torchrun rendezvous on one machine: two torchrun agents (``--nnodes=2``, one process each)
meet at a c10d endpoint on 127.0.0.1, as two cluster nodes would, and run ``ragcun train`` and the sharded
``ragcun evaluate``; each matches one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_resume_ddp import DDP_EXTRA, PER_DEVICE, _cmd, _env, _losses, single_process_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args: list[str], env: dict[str, str], log_dir: Path, timeout: int = 300) -> None:
    """``torchrun --nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:PORT`` twice,
    at once."""
    port = _free_port()
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node_rank={node}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
               f"--rdzv_id=ragcun-test-{port}", "--max_restarts=0", "-m", "ragcun", *args]
        log = open(log_dir / f"node{node}.log", "w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=timeout)
        finally:
            log.close()
    for node, (proc, _) in enumerate(procs):
        text = (log_dir / f"node{node}.log").read_text()
        assert proc.returncode == 0, f"node {node} failed:\n{text[-4000:]}"


def test_two_node_train_matches_one_process(triplets_dir, tiny_nodropout_path, tmp_path):
    single = single_process_run(triplets_dir, tiny_nodropout_path, tmp_path / "single")
    multi = tmp_path / "multi"
    _two_nodes(_cmd(triplets_dir, tiny_nodropout_path, multi, *DDP_EXTRA, *PER_DEVICE)[3:], _env(), tmp_path)
    summary = json.loads((multi / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    # node 1's process is its node's local rank 0 too, yet only the global rank 0 writes
    assert sorted(p.name for p in multi.iterdir() if not p.name.startswith(".")) == [
        "best", "checkpoint-3", "final", "train_summary.json"]
    assert len(single) == 3
    for a, b in zip(single, _losses(multi), strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-4)


def test_two_node_sharded_evaluate_matches_one_process(beir_slice, tiny_model_path, tmp_path):
    folder = beir_slice("scifact", {"test": 12}, extra_docs=40)
    args = ["evaluate", "-m", tiny_model_path, "-d", str(folder), "--chunk-size", "9",
            "--max-seq-length", "64"]
    env = _env()
    env["RAGCUN_CACHE_DIR"] = str(tmp_path / "cache-single")
    subprocess.run([sys.executable, "-m", "ragcun", *args, "-o", str(tmp_path / "single.json")], env=env,
                   check=True, capture_output=True)
    env["RAGCUN_CACHE_DIR"] = str(tmp_path / "cache-shared")  # the cache every node sees
    _two_nodes([*args, "-o", str(tmp_path / "multi.json")], env, tmp_path)
    single = json.loads((tmp_path / "single.json").read_text())
    multi = json.loads((tmp_path / "multi.json").read_text())
    name = folder.name
    n_chunks = -(-multi["datasets"][name]["documents"] // 9)
    # rank 0 encoded its half only
    assert multi["timing"][name]["corpus_chunks_encoded"] == (n_chunks + 1) // 2
    assert sorted(p.name for p in (tmp_path / "cache-shared" / "embeddings").iterdir()) and n_chunks > 2
    assert multi["results"][name] == pytest.approx(single["results"][name], abs=1e-6)
    assert multi["per_query"][name].keys() == single["per_query"][name].keys()
    logs = " ".join((tmp_path / f"node{n}.log").read_text() for n in range(2))
    assert logs.count("NDCG@10") == 1  # one table, printed by rank 0
