"""The benchmark harness end to end on tiny suites written to a temp dir: real subprocesses, real JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "run.py"

GOOD = '''
"""A tiny fake suite: sums numbers two ways."""
import os
from benchmarks.common import row, timed


def run(quick):
    n = 1000 if quick else 100000
    fast, _ = timed(lambda: sum(range(n)), reps=3)
    slow, _ = timed(lambda: sum(i for i in range(n)), reps=3)
    return {
        "suite": "tiny",
        "inputs": {"n": n, "pid": os.getpid()},
        "rows": [
            row("sum", "seconds", "builtin", fast, "generator", slow, higher_is_better=False, n=n),
            row("count", "items", "builtin", [1.0, 2.0, 3.0]),
        ],
        "notes": ["a note"],
    }
'''

BROKEN = '''
"""A suite that crashes."""
def run(quick):
    raise RuntimeError("boom from the broken suite")
'''

GPU = '''
"""Needs a GPU it never has."""
def run(quick):
    return {"suite": "needs-gpu", "skipped": "no CUDA device", "inputs": {}, "rows": [], "notes": []}
'''

BAD_ROW = '''
"""Returns a row whose values are not numbers."""
def run(quick):
    row = {"task": "t", "metric": "m", "ragcun": {"name": "x", "values": ["fast"]}}
    return {"suite": "bad-row", "rows": [row]}
'''


@pytest.fixture()
def suites(tmp_path: Path) -> Path:
    d = tmp_path / "suites"
    d.mkdir()
    (d / "tiny.py").write_text(textwrap.dedent(GOOD))
    (d / "broken.py").write_text(textwrap.dedent(BROKEN))
    (d / "needs_gpu.py").write_text(textwrap.dedent(GPU))
    (d / "bad_row.py").write_text(textwrap.dedent(BAD_ROW))
    (d / "_helper.py").write_text("X = 1\n")
    return d


def _harness():
    """Import benchmarks/run.py by path (it is a script, not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("ragcun_bench_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_list_shows_suites_with_dashes_and_skips_private(suites: Path) -> None:
    proc = _run("--list", "--suites-dir", str(suites))
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert names == ["bad-row", "broken", "needs-gpu", "tiny"]
    assert "sums numbers two ways" in proc.stdout


def test_harness_runs_suites_end_to_end_and_survives_failures(suites: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = _run("tiny", "broken", "needs-gpu", "bad-row", "--quick", "--suites-dir", str(suites), "--out",
                str(out))
    # One broken suite and one malformed one: reported, exit status 1, the others still ran and were written.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "boom from the broken suite" in proc.stderr
    assert "bad-row" in proc.stderr and "not a number" in proc.stderr
    assert not (out / "broken.json").exists() and not (out / "bad-row.json").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))

    tiny = json.loads((out / "tiny.json").read_text())
    assert tiny["suite"] == "tiny" and tiny["quick"] is True
    assert tiny["inputs"]["n"] == 1000
    assert tiny["inputs"]["pid"] != 0
    assert tiny["machine"]["versions"]["torch"]  # provenance added by the harness
    assert tiny["date"] and "commit" in tiny["git"]
    assert tiny["notes"] == ["a note"]
    first, second = tiny["rows"]
    assert first["ragcun"]["n"] == 3 and first["reference"]["n"] == 3
    assert first["ragcun"]["median"] == sorted(first["ragcun"]["values"])[1]
    assert first["ratio"] == pytest.approx(first["ragcun"]["median"] / first["reference"]["median"])
    lo, hi = first["ratio_range"]
    assert lo <= first["ratio"] <= hi
    assert first["extra"] == {"n": 1000}
    assert second["ragcun"]["median"] == 2.0 and second["ragcun"]["rel_spread"] == pytest.approx(1.0)
    assert "reference" not in second and "ratio" not in second

    gpu = json.loads((out / "needs-gpu.json").read_text())
    assert gpu["skipped"] == "no CUDA device" and gpu["rows"] == []

    summary = (out / "SUMMARY.md").read_text()
    assert "## tiny" in summary and "| sum | seconds ↓ |" in summary
    assert "Skipped: no CUDA device." in summary
    assert "FAILED in the last run" in summary and "boom" in summary
    # The printed table names every suite, failed ones included.
    for name in ("tiny", "needs-gpu", "broken", "bad-row"):
        assert name in proc.stdout

    # --summary-only rebuilds SUMMARY.md from the JSON already there, running nothing.
    (out / "SUMMARY.md").unlink()
    again = _run("--summary-only", "--out", str(out))
    assert again.returncode == 0, again.stderr
    rebuilt = (out / "SUMMARY.md").read_text()
    assert "## tiny" in rebuilt and "## needs-gpu" in rebuilt and "FAILED" not in rebuilt
    assert f"from `{out}/*.json`" in rebuilt  # names the directory it summarises
    if hasattr(os, "getloadavg"):
        assert tiny["machine"]["load_average"] and ", load " in rebuilt  # was the machine shared?

    # A result from an older harness (git as a plain string) is still summarised, not a crash.
    old = dict(tiny, suite="old", git="c102baa (data layer commit)")
    (out / "old.json").write_text(json.dumps(old))
    again = _run("--summary-only", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "commit c102baa (d" in (out / "SUMMARY.md").read_text()


def test_unknown_suite_is_a_clear_error(suites: Path, tmp_path: Path) -> None:
    proc = _run("nope", "--suites-dir", str(suites), "--out", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert "unknown suite(s): nope" in proc.stderr and "tiny" in proc.stderr


def test_real_suites_are_discoverable() -> None:
    harness = _harness()
    names = harness.discover()
    for name in ("encode", "sigreg", "train-gpu"):
        assert name in names
        assert harness.describe(names[name])  # every suite says what it measures


def test_finalize_row_rejects_missing_fields() -> None:
    harness = _harness()
    with pytest.raises(harness.SuiteError, match="row has no 'metric'"):
        harness.finalize_row({"task": "t", "ragcun": {"values": [1.0]}}, "suite x row 0")
    assert (harness.fmt(12345.6) == "12,346" and harness.fmt(0.012345) == "0.0123"
            and harness.fmt(None) == "–")


def _suite(name: str, monkeypatch):
    """Import a real suite module by path, with the repo root importable for ``benchmarks.common``."""
    monkeypatch.syspath_prepend(str(REPO))
    path = REPO / "benchmarks" / "suites" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"ragcun_bench_suite_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigreg_suite_reference_matches_ragcun_sigreg(monkeypatch) -> None:
    """The benchmark's naive complex-number formula is an independent check of ragcun's SIGReg."""
    import torch

    from ragcun.losses.sigreg import SIGReg

    suite = _suite("sigreg", monkeypatch)
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(1)) * 1.5
    sig = SIGReg(num_slices=64).eval()
    ours = sig(x)
    ref = suite.naive_sigreg(x, sig.directions(24))
    assert torch.allclose(ours, ref, rtol=1e-4), (ours, ref)
    # and it is a real test: a different sample gives a different value
    assert not torch.allclose(ref, suite.naive_sigreg(x * 0.5, sig.directions(24)), rtol=1e-2)
    rows = suite.naive_comparison([(8, 32)], reps=2)
    assert rows[0]["ragcun"]["n"] == 2 and rows[0]["extra"]["abs_diff"] < 1e-4


def test_train_gpu_suite_skips_without_cuda_and_its_step_runs_on_cpu(monkeypatch, tiny_model_path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragcun.losses import IsotropicGaussianLoss
    from ragcun.modeling import IsotropicGaussianEncoder

    suite = _suite("train_gpu", monkeypatch)
    if not torch.cuda.is_available():
        result = suite.run(quick=True)
        assert result["skipped"] == "no CUDA device" and result["rows"] == []
    assert suite.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert suite.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert suite.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert suite.peak_tflops("Some GPU") is None

    pairs = suite.training_pairs(8)
    assert len(pairs) == 8 and all(q and d for q, d in pairs)
    for make_model, make_loss, ckpt in (
        (lambda: IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16, hidden_dim=32),
         lambda m: IsotropicGaussianLoss(m, num_slices=32), True),
        (lambda: SentenceTransformer(tiny_model_path, device="cpu"), MultipleNegativesRankingLoss, False),
    ):
        got = suite.measure_training(make_model, make_loss, pairs, batch_size=4, checkpointing=ckpt,
                                     steps=2, warmup=1, device="cpu")
        assert len(got["seconds"]) == 2 and all(s > 0 for s in got["seconds"])
        assert got["tokens"][0] > 8 and got["params"] > 0


def test_the_sentence_transformers_reference_worker_encodes_what_sentence_transformers_does(
        tmp_path: Path, minilm_path: str, scifact_passages: list) -> None:
    """``benchmarks/st_reference.py`` (the reference side of the backends suite) in a real subprocess of this
    venv: its vectors are plain ``SentenceTransformer.encode_document``'s, and it reports its speed."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    texts = [d["text"] for d in scifact_passages[:12]]
    docs, queries = tmp_path / "docs.jsonl", tmp_path / "queries.jsonl"
    docs.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    queries.write_text(json.dumps({"text": "which cells make myelin"}))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "st_reference.py"), "--model",
                           minilm_path, "--backend", "torch", "--precision", "fp32", "--docs", str(docs),
                           "--queries", str(queries), "--max-seq-length", "128",
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert len(result["passages_per_s"]) == 1 and result["passages_per_s"][0] > 0
    assert result["versions"]["sentence-transformers"]
    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 128
    np.testing.assert_allclose(np.load(tmp_path / "out" / "docs.npy"), model.encode_document(texts),
                               atol=1e-5)
    assert np.load(tmp_path / "out" / "queries.npy").shape == (1, 384)
    assert not (tmp_path / "out" / "model").exists()  # its copy of the model is removed
