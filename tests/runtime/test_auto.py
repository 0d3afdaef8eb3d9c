"""``auto`` by measurement (ragcun.runtime.auto): the gate, the cache key, and what a CPU without bf16 gets.

The probe runs for real on real MiniLM; bf16 is emulated on CPUs without bf16 units, which changes its
speed but not its vectors, so the gate is tested on every CPU kind."""

from __future__ import annotations

import json

import pytest

from ragcun.runtime import MEASURED, Runtime, auto, cpu_has_bf16, prepare_model, resolve_runtime, runtime_of

pytest.importorskip("onnxruntime")

BF16_CPU = ("Test CPU with bf16", {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
AVX2_CPU = ("Test CPU with AVX2 only", {"avx2", "fma"})
MINILM_SEQ = 64  # the probe's sequence length here (tests/runtime/conftest.py's minilm)


@pytest.fixture(scope="module")
def probe_rows(minilm):
    """One real measurement of the candidates, shared by the tests below."""
    return auto.measure(minilm, batch_size=16, texts=auto.probe_texts(16), prepare=prepare_model)


def test_probe_rows_are_real_measurements(probe_rows):
    assert set(probe_rows) == {"torch-fp32", "torch-bf16", "onnx-fp32", "openvino-fp32", "openvino-bf16"}
    assert all(r["seconds"] > 0 for r in probe_rows.values())
    assert probe_rows["onnx-fp32"]["min_cosine"] > 0.99999  # the same vectors
    assert probe_rows["openvino-fp32"]["min_cosine"] > 0.99999
    assert probe_rows["openvino-bf16"]["min_cosine"] > 0.9999  # checked against torch before it counts
    assert 0.999 < probe_rows["torch-bf16"]["min_cosine"] < 1.0  # close, not equal


@pytest.mark.parametrize("gate", [0.9, 0.9999, 0.999999, 1.0 + 1e-9])
def test_auto_never_picks_a_runtime_below_the_gate(probe_rows, gate):
    chosen = auto.pick(probe_rows, gate=gate, margin=0.0001)  # any speed counts: only the gate decides
    assert probe_rows[chosen.tag]["min_cosine"] >= gate or chosen.is_reference
    faster_passing = [t for t, r in probe_rows.items() if t != "torch-fp32" and r["min_cosine"] >= gate
                      and r["seconds"] * auto.TIE < probe_rows[chosen.tag]["seconds"]]
    assert not faster_passing, f"{faster_passing} passes the gate and is faster than {chosen.tag}"


def test_a_slower_candidate_is_not_picked():
    rows = {"torch-fp32": {"seconds": 1.0, "min_cosine": 1.0},
            "torch-bf16": {"seconds": 0.95, "min_cosine": 0.99995},  # within the 10 % margin: noise
            "onnx-fp32": {"seconds": 1.4, "min_cosine": 1.0}}
    assert auto.pick(rows) == Runtime()
    rows["torch-bf16"]["seconds"] = 0.6
    assert auto.pick(rows) == Runtime("torch", "bf16")
    rows["onnx-fp32"]["seconds"] = 0.62  # as fast within the noise, and exact: the exact one wins
    assert auto.pick(rows) == Runtime("onnx", "fp32")
    rows["onnx-fp32"]["seconds"] = 1.4
    rows["torch-bf16"]["min_cosine"] = 0.9998
    assert auto.pick(rows) == Runtime()


def test_without_bf16_units_nothing_is_measured(minilm, tmp_path):
    path = tmp_path / "auto.json"
    assert auto.choose(minilm, cpu=AVX2_CPU, path=path, prepare=prepare_model) == Runtime()
    assert not path.exists()


def test_the_choice_is_cached_per_cpu_and_model(minilm, tiny_model_path, tmp_path, caplog):
    from sentence_transformers import SentenceTransformer

    path = tmp_path / "auto.json"
    first = auto.choose(minilm, cpu=BF16_CPU, path=path, prepare=prepare_model)
    caplog.clear()
    with caplog.at_level("INFO", logger="ragcun.runtime.auto"):
        # read back, not measured again
        assert auto.choose(minilm, cpu=BF16_CPU, path=path, prepare=prepare_model) == first
    assert "measuring" not in caplog.text
    other_cpu = (BF16_CPU[0] + " v2", BF16_CPU[1])
    auto.choose(minilm, cpu=other_cpu, path=path, prepare=prepare_model)
    tiny = SentenceTransformer(tiny_model_path, device="cpu")
    auto.choose(tiny, cpu=BF16_CPU, path=path, prepare=prepare_model)
    keys = list(json.loads(path.read_text()))
    assert (len(keys) == 3 and len({k.split(" | ")[0] for k in keys}) == 2
            and len({k.split(" | ")[1] for k in keys}) == 2)
    assert all("avx512_bf16" in k for k in keys)
    for entry in json.loads(path.read_text()).values():
        chosen = entry["chosen"]
        assert entry["rows"][chosen]["min_cosine"] >= auto.COSINE_GATE


def test_auto_resolves_by_this_cpu(monkeypatch):
    monkeypatch.delenv("RAGCUN_AUTO_MEASURE", raising=False)
    assert resolve_runtime() == (MEASURED if cpu_has_bf16() else Runtime())
    monkeypatch.setenv("RAGCUN_AUTO_MEASURE", "0")
    assert resolve_runtime() == Runtime()
    assert resolve_runtime("torch", "auto") == Runtime()  # only a fully automatic choice is measured


def test_a_measured_runtime_prepares_what_it_chose(minilm, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGCUN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(auto, "cpu_info", lambda: BF16_CPU)
    model = prepare_model(minilm, MEASURED, owned=False)
    entry = next(iter(json.loads((tmp_path / "runtime" / "auto.json").read_text()).values()))
    assert runtime_of(model).tag == entry["chosen"]
    assert runtime_of(minilm).is_reference  # the caller's model is not cast
