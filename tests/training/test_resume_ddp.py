"""Real subprocesses: resume after SIGKILL ends with the same weights; a 2-process torchrun
(gloo, CPU) runs, writes from rank 0 only, and logs the losses of one process on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "train_tiny.toml"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def _cmd(triplets, model, out, *extra: str) -> list[str]:
    sets = [f"train_data={triplets}", f"base_model={model}", f"output_dir={out}", "report_to=[]",
            "validate_during_training=false", *extra]
    return [sys.executable, "-m", "ragcun", "train", str(CONFIG), *[a for s in sets for a in ("--set", s)]]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(model_dir.rglob("model.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.parent.name}/{k}"] = v
    return out


def test_resume_after_sigkill_matches_uninterrupted(triplets_dir, tiny_model_path, tmp_path):
    extra = ("max_steps=6", "save_steps=2", "save_total_limit=5")
    ref = tmp_path / "ref"
    subprocess.run(_cmd(triplets_dir, tiny_model_path, ref, *extra), env=_env(), check=True,
                   capture_output=True)

    run = tmp_path / "run"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(_cmd(triplets_dir, tiny_model_path, run, *extra), env=_env(), stdout=log,
                            stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoint-2" / "ragcun_checkpoint.json").exists():
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists()

    res = subprocess.run(_cmd(triplets_dir, tiny_model_path, run, *extra) + ["--resume"], env=_env(),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"] and summary["global_steps"] == 6
    a, b = _weights(ref / "final"), _weights(run / "final")
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


def _losses(out: Path) -> list[float]:
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


#: Three logged steps of the tiny model on CPU: what the multi-process runs are compared on.
DDP_EXTRA = ("max_steps=3", "save_steps=3", "batch_sampler=batch_sampler", "use_cpu=true", "warmup_steps=0",
             "logging_steps=1")
#: One process on the global batch of 4, against two of 2 each (sentence-transformers' per-device batch).
SINGLE, PER_DEVICE = ("per_device_train_batch_size=4",), ("per_device_train_batch_size=2",)


def single_process_run(triplets_dir, model, out: Path) -> list[float]:
    """The losses of one process on the global batch (the reference of every multi-process test)."""
    subprocess.run(_cmd(triplets_dir, model, out, *DDP_EXTRA, *SINGLE), env=_env(), check=True,
                   capture_output=True)
    return _losses(out)


def test_torchrun_two_processes_matches_single_process(triplets_dir, tiny_nodropout_path, tmp_path):
    ls = single_process_run(triplets_dir, tiny_nodropout_path, tmp_path / "single")
    ddp = tmp_path / "ddp"
    cmd = _cmd(triplets_dir, tiny_nodropout_path, ddp, *DDP_EXTRA, *PER_DEVICE)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "ragcun", *cmd[3:]]
    res = subprocess.run(torchrun, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads((ddp / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    # rank 0 alone writes: one summary, one set of model files, one optimizer state per checkpoint
    assert sorted(p.name for p in ddp.iterdir() if not p.name.startswith(".")) == [
        "best", "checkpoint-3", "final", "train_summary.json"]
    ld = _losses(ddp)
    assert len(ls) == len(ld) == 3
    for a, b in zip(ls, ld, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-4)
