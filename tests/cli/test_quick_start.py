"""The README's quick start, run command by command as a new user would: in a fresh folder beside
``shared/data`` (as a clone sits), with no ``RAGCUN_DATA_DIR`` exported, each command taken from the README
itself and only sized down (fewer triplets, two training steps, 300 documents)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]

#: What each command gets appended to run in about a minute; everything else is the README's own text.
SIZED_DOWN = {
    "data triplets": ["--max-train-samples", "64"],
    "train": ["--set", "max_steps=2"],
    "index build": ["--limit", "300"],
}


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip().startswith("ragcun ")]


def test_the_quick_start_runs_as_written(data_root, tmp_path):
    commands = quick_start_commands()
    assert [c.split()[1] for c in commands] == ["data", "data", "train", "index", "search", "serve", "push"]
    project = tmp_path / "clone-7f3a"  # a name no vocabulary holds: it must not reach the pushed files
    project.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_root)
    (project / "configs").symlink_to(ROOT / "configs")
    env = {k: v for k, v in os.environ.items() if k != "RAGCUN_DATA_DIR"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for command in commands:
        argv = shlex.split(command)
        extra = next((v for k, v in SIZED_DOWN.items() if " ".join(argv[1:3]).startswith(k)), [])
        if argv[1] == "serve":  # long-running: it must come up and answer, then it is stopped
            argv += ["--port", str(free_port())]
            proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            try:
                _wait_ready(proc, int(argv[-1]))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            continue
        res = subprocess.run(argv + extra, cwd=project, env=env, capture_output=True, text=True, timeout=600)
        out = res.stdout + res.stderr
        assert res.returncode == 0 and "Traceback" not in out, f"{command}\n{out[-3000:]}"
    assert (project / "my-index" / "manifest.json").is_file()
    # the card a Hub visitor sees: the run's name, its data, loss, settings and metrics, the method's
    # BibTeX, ragcun's tags, and no local path in any staged file
    staged = tmp_path / "staged"
    argv = ["ragcun", "push", "runs/my-model/best", "you/scifact-gaussian", "--to", str(staged)]
    res = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    card = (staged / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^# ragcun my-model: all-MiniLM-L6-v2 \+ Gaussian head", card, re.M), card[:2000]
    assert all(f"- {t}\n" in card for t in ("ragcun", "gaussian-embeddings", "sigreg", "euclidean-distance"))
    assert "**Training data:** scifact (beir, train split" in card and "λ·SIGReg (λ = 1.0" in card
    assert "| per_device_train_batch_size | 256 |" in card and re.search(r"\| ndcg@10 \| 0\.\d{4} \|", card)
    assert "@article{balestriero2025lejepa" in card
    for f in staged.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md"):
            text = f.read_text(encoding="utf-8")
            assert str(tmp_path) not in text and "clone-7f3a" not in text, f


def test_an_offline_download_is_one_line(tmp_path):
    env = {**os.environ, "RAGCUN_BEIR_URL": "http://127.0.0.1:9/"}
    argv = [sys.executable, "-m", "ragcun", "data", "download", "fiqa", "--data-dir", str(tmp_path),
            "--timeout", "2"]
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    err = " ".join(res.stderr.split())
    assert res.returncode == 1 and "Traceback" not in res.stderr and "╭" not in res.stderr
    assert err.startswith("error: cannot reach") and "looks for local copies in" in err


def _wait_ready(proc: subprocess.Popen, port: int) -> None:
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ragcun serve exited: {proc.stdout.read()}")
        try:
            res = httpx.post(f"http://127.0.0.1:{port}/search", json={"query": "vitamin D", "k": 3},
                             timeout=5)
            if res.status_code == 200:
                assert len(res.json()["hits"]) == 3
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    pytest.fail("ragcun serve did not answer in 120 s")
