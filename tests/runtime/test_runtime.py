"""The encoding runtimes (ragcun.runtime): each backend and precision against fp32 torch on real MiniLM
passages, the Gaussian head inside the ONNX graph, the export cache, and clear errors."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ragcun.runtime import BackendUnavailableError, Runtime, prepare_model, resolve_runtime, runtime_of

pytest.importorskip("onnxruntime")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_auto_resolves_to_the_measured_defaults():
    assert resolve_runtime() == Runtime("torch", "fp32")  # a CPU: fp32 torch measured fastest lossless
    assert resolve_runtime("auto", "int8") == Runtime("onnx", "int8")
    assert resolve_runtime("onnx", None) == Runtime("onnx", "fp32")
    assert resolve_runtime("torch", "bf16").tag == "torch-bf16"


@pytest.mark.parametrize(("backend", "precision", "words"), [
    ("onnx", "bf16", "bf16 runs on the torch backend"),
    ("torch", "int8", "int8 runs on the onnx runtime"),
])
def test_unsupported_combinations_say_what_to_use(backend, precision, words):
    with pytest.raises(BackendUnavailableError, match=words):
        resolve_runtime(backend, precision)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="the encoding runtime must be auto, torch, onnx"):
        resolve_runtime("tensorrt")
    with pytest.raises(ValueError, match="precision must be auto, fp32, bf16, int8"):
        resolve_runtime("torch", "fp16")


def test_missing_onnxruntime_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ragcun\[onnx\]'"):
        resolve_runtime("onnx", "fp32")


def test_cli_reports_a_bad_runtime_in_one_line(data_root):
    from ragcun.cli import app

    res = CliRunner().invoke(app, ["evaluate", "-m", "all-MiniLM-L6-v2", "-d", "scifact", "--data-dir",
                                   str(data_root), "--backend", "onnx", "--precision", "bf16"])
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 1
    assert "error: precision bf16 runs on the torch backend" in text and "Traceback" not in text


@pytest.mark.parametrize(("backend", "precision", "min_cos", "mean_cos"), [
    ("onnx", "fp32", 0.99999, 0.99999),  # the same arithmetic in another runtime: lossless
    ("torch", "bf16", 0.999, 0.9999),  # lossless by the 0.999 criterion
    ("onnx", "int8", 0.97, 0.99),  # lossy: int8 weights per channel, dynamic int8 activations
])
def test_each_runtime_encodes_real_passages_close_to_fp32(minilm, passages, backend, precision, min_cos,
                                                          mean_cos):
    ref = minilm.encode(passages, batch_size=16)
    model = prepare_model(minilm, resolve_runtime(backend, precision), owned=False)
    assert runtime_of(model) == Runtime(backend, precision)
    got = model.encode(passages, batch_size=16)
    q_ref, q_got = minilm.encode_query(passages[:8]), model.encode_query(passages[:8])
    cos = _cos(got, ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert cos.min() >= min_cos and cos.mean() >= mean_cos, (cos.min(), cos.mean())
    assert _cos(q_got, q_ref).min() >= min_cos
    assert next(minilm.parameters()).dtype == torch.float32  # the caller's model is untouched
    assert model.max_seq_length == 128


def test_gaussian_head_is_in_the_onnx_graph(tiny_model_path, passages):
    import onnx

    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.runtime.onnx import export_dir

    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=24, hidden_dim=32)
    ref = enc.encode_document(passages[:12])
    model = prepare_model(enc, Runtime("onnx", "fp32"))
    got = model.encode_document(passages[:12])
    assert got.shape == (12, 24)  # the head's dimension, not the base's 32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)  # unnormalised: norms agree too
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)
    path = export_dir(model[0].source_fingerprint) / "model.onnx"
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == 24


def test_export_cache_is_reused_and_rebuilt_after_a_model_change(tiny_model_path, passages, caplog):
    from sentence_transformers import SentenceTransformer

    from ragcun.fingerprint import model_fingerprint
    from ragcun.runtime.onnx import export_dir

    model = SentenceTransformer(tiny_model_path, device="cpu")
    first = prepare_model(model, Runtime("onnx", "fp32"))
    folder = export_dir(model_fingerprint(model))
    meta = json.loads((folder / "export.json").read_text())
    assert meta["probe_cosine_min"] >= 0.9999 and (folder / "model.onnx").is_file()
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ragcun.runtime.onnx"):
        again = prepare_model(model, Runtime("onnx", "fp32"))
    assert "exported" not in caplog.text and (folder / "model.onnx").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.encode(passages[:4]), first.encode(passages[:4]))

    with torch.no_grad():  # change the weights: a new fingerprint, a new export, the new vectors
        torch.manual_seed(0)
        for p in model[0].auto_model.encoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    changed = prepare_model(model, Runtime("onnx", "fp32"))
    assert export_dir(model_fingerprint(model)) != folder
    np.testing.assert_allclose(changed.encode(passages[:4]), model.encode(passages[:4]), rtol=1e-4, atol=1e-5)
    assert not np.allclose(changed.encode(passages[:4]), first.encode(passages[:4]), atol=1e-3)


def test_no_cuda_provider_is_a_logged_fallback(caplog):
    import onnxruntime as ort

    from ragcun.runtime.onnx import _providers

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with caplog.at_level(logging.WARNING, logger="ragcun.runtime.onnx"):
        assert _providers(ort, "cuda:0") == ["CPUExecutionProvider"]
    assert "runs on the CPU" in caplog.text


def test_evaluate_and_retriever_run_on_onnx(minilm_path, beir_slice, tmp_path):
    from ragcun.evaluation.beir_eval import evaluate_model
    from ragcun.retrieval import GaussianRetriever

    folder = beir_slice("scifact", {"test": 15}, extra_docs=40)
    ref = evaluate_model(minilm_path, str(folder), max_seq_length=128, cache=False, show_progress_bar=False)
    got = evaluate_model(minilm_path, str(folder), max_seq_length=128, cache=False, show_progress_bar=False,
                         backend="onnx")
    assert ((got["config"]["backend"], got["config"]["precision"], got["config"]["batch_size"])
            == ("onnx", "fp32", 16))
    name = folder.name
    assert abs(got["results"][name]["ndcg@10"] - ref["results"][name]["ndcg@10"]) < 1e-4

    r = GaussianRetriever(minilm_path, runtime="onnx", precision="int8", max_seq_length=128)
    r.add_documents(["Myelin is made by oligodendrocytes.", "Stem cells divide."], ids=["a", "b"])
    r.save(tmp_path / "ix")
    assert r.manifest()["encoding"] == {"backend": "onnx", "precision": "int8"}
    loaded = GaussianRetriever.load(tmp_path / "ix")
    assert (loaded.runtime == Runtime("onnx", "int8")
            and next(loaded.model.parameters()).dtype == torch.float32)
    assert loaded.retrieve("which cells make myelin", top_k=1)[0].id == "a"


@pytest.mark.parametrize("runtime", [Runtime("onnx", "fp32"), Runtime("torch", "bf16")])
def test_shared_corpus_pass_under_each_runtime(tiny_model_path, passages, runtime, tmp_path, monkeypatch):
    """The experiment's one-pass-per-body encoding works on runtime models (ONNX: one graph, no shared body;
    bf16: the tail runs in bf16 on the body's vectors) and matches direct encoding."""
    # its own cache: others count the session's
    monkeypatch.setenv("RAGCUN_CACHE_DIR", str(tmp_path / "cache"))
    from ragcun.encoding.corpus import encode_corpus, encode_corpus_shared
    from ragcun.modeling import IsotropicGaussianEncoder, submodel

    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16, hidden_dim=24)
    models = {"arm": enc, "arm.base": submodel(enc, enc.base_modules)}
    models = {k: prepare_model(m, runtime) for k, m in models.items()}
    ids = [f"d{i}" for i in range(len(passages))]
    done = encode_corpus_shared(models, ids, passages, f"toy-{runtime.tag}", batch_size=8)
    assert set(done) == {"arm", "arm.base"}
    for label, model in models.items():
        emb = encode_corpus(model, ids, passages, f"toy-{runtime.tag}", batch_size=8)
        direct = model.encode_document(passages[:6], batch_size=8)
        np.testing.assert_allclose(emb.array()[:6], direct, rtol=1e-2, atol=1e-3, err_msg=label)
        assert emb.encoded_chunks == 0  # the shared pass filled the cache


def test_a_runtime_model_is_not_converted_again(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    model = prepare_model(SentenceTransformer(tiny_model_path, device="cpu"), Runtime("onnx", "fp32"))
    assert prepare_model(model, Runtime("onnx", "fp32")) is model
    with pytest.raises(BackendUnavailableError, match="already encodes with onnx-fp32"):
        prepare_model(model, Runtime("torch", "bf16"))
