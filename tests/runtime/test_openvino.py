"""The OpenVINO runtime (ragcun.runtime.openvino) and ``auto``'s labelled int8 check: real MiniLM, real
SciFact passages and slices, real OpenVINO and NNCF."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ragcun.fingerprint import model_fingerprint
from ragcun.runtime import BackendUnavailableError, Runtime, auto, prepare_model, resolve_runtime, runtime_of

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

BF16_VNNI_CPU = ("Test CPU with bf16 and VNNI", {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
BF16_ONLY_CPU = ("Test CPU with bf16, no VNNI", {"avx2", "avx512f", "avx512_bf16"})
AVX2_CPU = ("Test CPU with AVX2 only", {"avx2", "fma"})


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGCUN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_openvino_resolves_and_refuses_in_one_line(monkeypatch):
    assert resolve_runtime("openvino") == Runtime("openvino", "fp32")
    assert resolve_runtime("openvino", "int8") == Runtime("openvino", "int8")
    with pytest.raises(BackendUnavailableError, match="int8 runs on the onnx runtime .* or the openvino"):
        resolve_runtime("torch", "int8")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ragcun\[openvino\]'"):
        resolve_runtime("openvino", "int8")


@pytest.mark.parametrize(("precision", "min_cos"), [("fp32", 0.99999), ("bf16", 0.9999)])
def test_lossless_openvino_reproduces_torch(minilm, passages, precision, min_cos):
    model = prepare_model(minilm, Runtime("openvino", precision), owned=False)
    assert runtime_of(model) == Runtime("openvino", precision)
    ref, got = minilm.encode(passages, batch_size=16), model.encode(passages, batch_size=16)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert _cos(got, ref).min() >= min_cos
    assert model.get_embedding_dimension() == 384 and model.max_seq_length == 128


def test_int8_is_calibrated_on_the_corpus_cached_and_rebuilt_when_damaged(minilm, passages, own_cache):
    from ragcun.files import sha256_file

    ref = minilm.encode(passages, batch_size=16)
    first = prepare_model(minilm, Runtime("openvino", "int8"), owned=False, calibration=passages[:24])
    cos = _cos(first.encode(passages, batch_size=16), ref)
    assert cos.min() > 0.95 and cos.mean() > 0.98, (cos.min(), cos.mean())  # lossy, close
    (folder,) = own_cache.glob("openvino/*/int8-*")
    record = json.loads((folder / "int8.json").read_text())
    assert record["calibration_texts"] == 24
    assert record["sha256"]["model.bin"] == sha256_file(folder / "model.bin")
    stamp = (folder / "model.bin").stat().st_mtime_ns

    again = prepare_model(minilm, Runtime("openvino", "int8"), owned=False, calibration=passages[:24])
    assert (folder / "model.bin").stat().st_mtime_ns == stamp  # the cached graph, not quantised again
    assert model_fingerprint(again) == model_fingerprint(first)
    other = prepare_model(minilm, Runtime("openvino", "int8"), owned=False, calibration=passages[24:])
    assert len(list(own_cache.glob("openvino/*/int8-*"))) == 2  # another sample, another graph
    assert model_fingerprint(other) != model_fingerprint(first)  # so cached embeddings never mix

    with open(folder / "model.bin", "r+b") as f:  # damage the cached weights
        f.seek(1000)
        f.write(b"\x7f" * 64)
    rebuilt = prepare_model(minilm, Runtime("openvino", "int8"), owned=False, calibration=passages[:24])
    assert sha256_file(folder / "model.bin") == record["sha256"]["model.bin"]  # quantised again, same graph
    np.testing.assert_allclose(rebuilt.encode(passages[:8]), first.encode(passages[:8]), atol=1e-5)


def test_int8_without_calibration_is_calibrated_on_the_probe(tiny_model_path, own_cache):
    from sentence_transformers import SentenceTransformer

    tiny = SentenceTransformer(tiny_model_path, device="cpu")
    model = prepare_model(tiny, Runtime("openvino", "int8"))
    (folder,) = own_cache.glob("openvino/*/int8-*")
    assert json.loads((folder / "int8.json").read_text())["calibration_texts"] == len(auto.probe_texts())
    assert model.encode(["a sentence"]).shape == (1, 32)


def test_the_gaussian_model_runs_whole_in_openvino_norm_kept(tiny_model_path, passages, own_cache):
    from ragcun.modeling import IsotropicGaussianEncoder

    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=24, hidden_dim=32)
    ref = enc.encode_document(passages[:12])
    for precision in ("fp32", "int8"):
        model = prepare_model(enc, Runtime("openvino", precision), owned=False, calibration=passages)
        got = model.encode_document(passages[:12])
        assert got.shape == (12, 24) and model.get_embedding_dimension() == 24  # the head's, not the base's
        norms, ref_norms = np.linalg.norm(got, axis=1), np.linalg.norm(ref, axis=1)
        if precision == "fp32":
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)  # unnormalised: norms agree too
        else:
            assert _cos(got, ref).min() > 0.95 and np.abs(norms / ref_norms - 1).max() < 0.1
        assert not np.allclose(norms, 1.0)


def _rows(lossless_seconds: float) -> dict:
    rows = {rt.tag: {"seconds": lossless_seconds * 1.5, "min_cosine": 1.0} for rt in auto.LOSSLESS}
    rows["openvino-bf16"] = {"seconds": lossless_seconds, "min_cosine": 0.99995}
    rows["torch-fp32"] = {"seconds": 2.0, "min_cosine": 1.0}
    return rows


class _Check:
    """Labelled data whose verdict is already in the cache (the decision is what is tested here)."""

    key = "slice0"
    calibration = ("a passage",)

    def ndcg10(self, model):  # pragma: no cover - the cached verdict is read instead
        raise AssertionError("the cached verdict must be used")


@pytest.mark.parametrize(("int8_seconds", "loss", "env", "cpu", "chosen"), [
    (0.5, 0.3, "1", BF16_VNNI_CPU, "openvino-int8"),  # faster and within 0.5 NDCG@10
    (0.5, 0.6, "1", BF16_VNNI_CPU, "openvino-bf16"),  # loses too much
    (0.95, 0.1, "1", BF16_VNNI_CPU, "openvino-bf16"),  # not faster by the margin
    (0.5, 0.3, "0", BF16_VNNI_CPU, "openvino-bf16"),  # RAGCUN_AUTO_INT8=0
    (0.5, 0.3, "1", BF16_ONLY_CPU, "openvino-bf16"),  # no int8 units
    (0.5, 0.3, "1", AVX2_CPU, "torch-fp32"),  # nothing measured on AVX2
])
def test_auto_takes_int8_only_when_the_labelled_check_allows(minilm, tmp_path, monkeypatch, int8_seconds,
                                                            loss, env, cpu, chosen):
    monkeypatch.setenv(auto.INT8_ENV, env)
    path = tmp_path / "auto.json"
    key = (f"{auto.cpu_key(cpu)} | {model_fingerprint(minilm)} | seq {minilm.max_seq_length}")
    path.write_text(json.dumps({key: {"rows": _rows(1.0)},
                                f"{key} | int8 check slice0": {"seconds": int8_seconds, "ndcg10": 70 - loss,
                                                               "ndcg10_fp32": 70, "ndcg10_loss": loss}}))
    got = auto.choose(minilm, cpu=cpu, path=path, prepare=prepare_model, check=_Check())
    assert got.tag == chosen


def test_the_int8_check_is_measured_on_real_labels_and_evaluate_uses_its_verdict(minilm_path, beir_slice,
                                                                                   own_cache, monkeypatch):
    from ragcun.data.beir import load_beir
    from ragcun.evaluation.beir_eval import evaluate_model
    from ragcun.evaluation.runtime_check import beir_check

    folder = beir_slice("scifact", {"test": 15}, extra_docs=40)
    check = beir_check(load_beir(str(folder)), "cos", 16)
    assert len(check.queries) == 15 and set(check.qrels) == set(check.queries)
    assert len(check.docs) == len(check.doc_ids) <= 1000 and check.calibration

    monkeypatch.setenv("RAGCUN_AUTO_MEASURE", "1")
    monkeypatch.setattr(auto, "cpu_info", lambda: BF16_VNNI_CPU)
    monkeypatch.setattr("ragcun.runtime.spec.cpu_info", lambda: BF16_VNNI_CPU)
    out = evaluate_model(minilm_path, str(folder), max_seq_length=64, cache=False, show_progress_bar=False)
    cache = json.loads((own_cache / "runtime" / "auto.json").read_text())
    (verdict,) = [v for k, v in cache.items() if " | int8 check " in k]
    assert 0 <= verdict["ndcg10_fp32"] <= 100 and abs(verdict["ndcg10_loss"]) < 10  # measured, not assumed
    (lossless,) = [v for k, v in cache.items() if " | int8 check " not in k]
    best = lossless["rows"][lossless["chosen"]]["seconds"]
    takes = verdict["ndcg10_loss"] <= auto.MAX_NDCG_LOSS and verdict["seconds"] * auto.MARGIN <= best
    used = out["datasets"][folder.name]["runtime"]
    assert used == ("openvino-int8" if takes else lossless["chosen"])
    assert (out["config"]["backend"], out["config"]["precision"]) == tuple(used.split("-"))
    # the caller's choice of a runtime is never second-guessed by the check
    fixed = evaluate_model(minilm_path, str(folder), max_seq_length=64, cache=False, show_progress_bar=False,
                           backend="torch", precision="fp32")
    assert fixed["datasets"][folder.name]["runtime"] == "torch-fp32"
    explicit = evaluate_model(minilm_path, str(folder), max_seq_length=64, cache=False,
                              show_progress_bar=False, backend="openvino", precision="int8")
    assert explicit["datasets"][folder.name]["runtime"] == "openvino-int8"
    corpus = len(load_beir(str(folder)).corpus)
    records = [json.loads(p.read_text()) for p in own_cache.glob("openvino/*/int8-*/int8.json")]
    # calibrated on the corpus, not on the probe
    assert records and all(r["calibration_texts"] == min(corpus, 128) for r in records)


def test_a_retriever_keeps_its_int8_calibration_across_save_and_load(minilm_path, passages, own_cache,
                                                                      tmp_path):
    from ragcun.retrieval import GaussianRetriever

    for bad, words in (([passages[0], 3], r"calibration\[1\] is int"),
                       ([passages[0], " "], r"calibration\[1\] is empty")):
        with pytest.raises((TypeError, ValueError), match=words):
            GaussianRetriever(minilm_path, runtime="openvino", precision="int8", calibration=bad)
    r = GaussianRetriever(minilm_path, runtime="openvino", precision="int8", max_seq_length=128,
                          calibration=passages)
    ids = [f"d{i}" for i in range(20)]
    r.add_documents(passages[:20], ids=ids)
    assert r.retrieve(passages[3][:300], top_k=1)[0].id == "d3"
    r.save(tmp_path / "ix")
    saved = json.loads((tmp_path / "ix" / "manifest.json").read_text())["encoding"]
    assert saved["backend"] == "openvino" and saved["calibration"] == passages  # 48 texts: all kept
    loaded = GaussianRetriever.load(tmp_path / "ix")
    assert loaded.runtime == Runtime("openvino", "int8")
    assert model_fingerprint(loaded.encoder) == model_fingerprint(r.encoder)  # the same int8 graph
    assert [h.id for h in loaded.retrieve(passages[7][:300], top_k=3)] == \
        [h.id for h in r.retrieve(passages[7][:300], top_k=3)]

    from ragcun.retrieval.persistence import MANIFEST_HASH, manifest_digest

    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    manifest["encoding"]["calibration"] = [1, 2]  # as a faulty writer would seal it
    manifest[MANIFEST_HASH] = manifest_digest(manifest)
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="encoding.calibration must be a list of non-blank texts"):
        GaussianRetriever.load(tmp_path / "ix")
