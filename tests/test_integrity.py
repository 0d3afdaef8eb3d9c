"""Nothing changes a result silently: a model's identity covers its tokenizer, a cached ONNX graph and a saved
manifest are checked against their recorded hashes, vectors and ids are published together (a kill between
the writes, a full disk), a killed server's LanceDB copy is cleaned up, and messages say what is true (a
symlink loop, a gzipped corpus, a busy port)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragcun.cli import app

runner = CliRunner()


def clean_error(res, *needles: str) -> None:
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"


@pytest.fixture(scope="module")
def uncased(minilm_path, tmp_path_factory) -> Path:
    """MiniLM with lower-casing turned off in its tokenizer files (the weights untouched)."""
    out = tmp_path_factory.mktemp("uncased") / "minilm"
    shutil.copytree(minilm_path, out)
    tok = json.loads((out / "tokenizer.json").read_text())
    tok["normalizer"]["lowercase"] = False
    (out / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["do_lower_case"] = False
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def test_the_tokenizer_is_part_of_the_models_identity(minilm_path, uncased, scifact_passages, tmp_path):
    from sentence_transformers import SentenceTransformer

    from ragcun.fingerprint import model_fingerprint
    from ragcun.retrieval import GaussianRetriever, ModelMismatchError

    a, b = SentenceTransformer(minilm_path), SentenceTransformer(str(uncased))
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(SentenceTransformer(minilm_path))  # stable
    q = "CELL BIOLOGY OF STEM CELLS"
    before = model_fingerprint(a)
    assert not np.allclose(a.encode(q), b.encode(q), atol=1e-3)  # what the identity protects: other vectors
    assert model_fingerprint(a) == before  # encoding sets truncation: not identity
    r = GaussianRetriever(minilm_path, max_seq_length=64)
    r.add_documents([d["text"] for d in scifact_passages[:20]], ids=[d["id"] for d in scifact_passages[:20]])
    r.save(tmp_path / "ix")
    with pytest.raises(ModelMismatchError, match="was built with model"):
        GaussianRetriever.load(tmp_path / "ix", model=str(uncased))


def test_a_tampered_onnx_export_is_made_again_never_run(tiny_model_path, caplog):
    pytest.importorskip("onnxruntime")
    import onnx
    from sentence_transformers import SentenceTransformer

    from ragcun.runtime.onnx import export, onnx_model

    model = SentenceTransformer(tiny_model_path)
    texts = ["stem cells divide", "vitamin D and cancer"]
    want = model.encode(texts)
    path = export(model)
    graph = onnx.load(str(path))
    init = max(graph.graph.initializer, key=lambda t: len(t.raw_data))  # the largest weight, times 3
    w = np.frombuffer(init.raw_data, dtype=np.float32) * 3
    init.raw_data = w.astype(np.float32).tobytes()
    onnx.save(graph, str(path))
    tampered = path.read_bytes()
    got = onnx_model(model).encode(texts)
    assert "differs from the hash recorded" in caplog.text
    assert path.read_bytes() != tampered  # made again from the torch model ...
    np.testing.assert_allclose(got, want, atol=1e-4)  # ... so the vectors are the model's
    int8 = onnx_model(model, precision="int8")
    q8 = path.with_name("model.int8.onnx")
    q8.write_bytes(q8.read_bytes()[: len(q8.read_bytes()) // 2] + b"\0" * (len(q8.read_bytes()) // 2 + 1))
    caplog.clear()
    again = onnx_model(model, precision="int8").encode(texts)  # a zeroed half: no protobuf traceback
    assert "differs from the hash recorded" in caplog.text
    np.testing.assert_allclose(again, int8.encode(texts), atol=1e-5)


def _encode_script(model: str, docs: Path, out: Path) -> str:
    return textwrap.dedent(f"""
        import os, signal
        import ragcun.files as io
        from ragcun.cli import app
        io._between_renames = lambda: os.kill(os.getpid(), signal.SIGKILL)   # after the first rename
        app(["encode", "-m", {model!r}, "--docs", {str(docs)!r}, "--out", {str(out)!r}],
            standalone_mode=False)
    """)


def test_vectors_and_ids_are_published_together(tiny_model_path, tmp_path):
    docs = tmp_path / "docs.jsonl"
    out = tmp_path / "v.npy"
    ids_file = tmp_path / "v.ids.json"
    docs.write_text("".join(json.dumps({"id": f"a{i}", "text": f"text {i}"}) + "\n" for i in range(100)))
    res = runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(docs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape[0] == len(json.loads(ids_file.read_text())) == 100
    # a second run with 300 texts killed between its renames: the old pair is gone, never mixed
    docs.write_text("".join(json.dumps({"id": f"b{i}", "text": f"text {i}"}) + "\n" for i in range(300)))
    proc = subprocess.run([sys.executable, "-c", _encode_script(tiny_model_path, docs, out)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not out.exists() and json.loads(ids_file.read_text())[0] == "b0"  # incomplete, not inconsistent
    # the next writer finishes the committed publication first
    from ragcun.files import recover_files

    recover_files(out, ids_file)
    assert np.load(out).shape[0] == len(json.loads(ids_file.read_text())) == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "v.ids.json", "v.npy"]


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs (root only): a real full disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_one_line_naming_the_file(tiny_model_path, tiny_disk, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"a{i}", "text": f"text {i}"}) + "\n" for i in range(50)))
    out = tiny_disk / "v.npy"
    assert runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(docs), "--out", str(out)]
                         ).exit_code == 0
    before = out.read_bytes()
    big = tmp_path / "big.jsonl"  # 6,000 × 32 floats: far over the disk
    big.write_text("".join(json.dumps({"id": f"b{i}", "text": f"text {i}"}) + "\n" for i in range(6000)))
    res = runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(big), "--out", str(out)])
    clean_error(res, f"{out}: the disk is full", "the previous v.npy (if any) is unchanged")
    assert out.read_bytes() == before and len(json.loads((tiny_disk / "v.ids.json").read_text())) == 50
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["v.ids.json", "v.npy"]  # no temporary file left
    # index build (FAISS) on the full disk: one line, the earlier index kept
    from ragcun.modeling import IsotropicGaussianEncoder

    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=32).save(tmp_path / "model")
    res = runner.invoke(app, ["index", "build", "-m", str(tmp_path / "model"), "--docs", str(big), "--out",
                              str(tiny_disk / "ix")])
    clean_error(res, "index.faiss: FAISS could not write it (No space left on device)", "the disk is full")
    assert "Error in" not in res.output and "faiss/impl" not in res.output, res.output  # not FAISS's C++ text


def test_a_killed_servers_lancedb_copy_is_removed(tiny_model_path, tmp_path):
    pytest.importorskip("lancedb")
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.retrieval import GaussianRetriever

    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8).save(tmp_path / "model")
    r = GaussianRetriever(str(tmp_path / "model"), engine="lancedb")
    r.add_documents(["one", "two", "three"], ids=["a", "b", "c"])
    r.save(tmp_path / "ix")
    script = (f"import os, signal\nfrom ragcun.retrieval import GaussianRetriever\n"
              f"r = GaussianRetriever.load({str(tmp_path / 'ix')!r})\n"  # kept alive: killed while serving
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p.name for p in tmp_path.iterdir()]
    assert [n for n in left if n.startswith(".ragcun-lance-")], (left, proc.stdout)  # what kill -9 leaves
    loaded = GaussianRetriever.load(tmp_path / "ix")  # the next load removes the dead process's copy
    mine = [p for p in tmp_path.iterdir() if p.name.startswith(".ragcun-lance-")]
    assert len(mine) == 1 and f"-{os.getpid()}-" in mine[0].name and len(loaded) == 3


def test_messages_say_what_is_true(tiny_model_path, data_root, tmp_path):
    loop = tmp_path / "loop.jsonl"
    os.symlink(loop, loop)
    res = runner.invoke(app, ["index", "build", "-m", tiny_model_path, "--docs", str(loop), "--out",
                              str(tmp_path / "ix")])
    clean_error(res, "symbolic-link loop")
    dangling = tmp_path / "gone.jsonl"
    os.symlink(tmp_path / "nowhere.jsonl", dangling)
    res = runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(dangling), "--out",
                              str(tmp_path / "v.npy")])
    clean_error(res, "a symbolic link to", "which does not exist")
    ds_loop = tmp_path / "dsloop"
    os.symlink(ds_loop, ds_loop)
    res = runner.invoke(app, ["evaluate", "-m", tiny_model_path, "-d", str(ds_loop), "--no-cache"])
    clean_error(res, "symbolic-link loop")
    # a dataset whose corpus is gzipped is read by every command (evaluate too)
    import gzip

    src = data_root / "beir" / "scifact"
    ds = tmp_path / "gz"
    (ds / "qrels").mkdir(parents=True)
    lines = (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    (ds / "corpus.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    kept = {json.loads(x)["_id"] for x in lines}
    qrels = [x for x in (src / "qrels" / "test.tsv").read_text().splitlines()[1:] if x.split("\t")[1] in kept]
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    shutil.copy(src / "queries.jsonl", ds / "queries.jsonl")
    res = runner.invoke(app, ["evaluate", "-m", tiny_model_path, "-d", str(ds), "--no-cache",
                              "--max-seq-length", "32"])
    assert res.exit_code == 0 and "ndcg" in res.output.lower(), res.output


def test_serve_on_a_busy_port_says_so_first(tiny_model_path, tmp_path):
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.retrieval import GaussianRetriever

    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8).save(tmp_path / "model")
    r = GaussianRetriever(str(tmp_path / "model"))
    r.add_documents(["one", "two"], ids=["a", "b"])
    r.save(tmp_path / "ix")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "ragcun", "serve", str(tmp_path / "ix"), "--port", str(port)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and f"--port {port}: cannot listen there" in " ".join(out.split()), out
    assert "serving" not in out and "Traceback" not in out, out


def test_the_msmarco_archive_is_checked_and_capped(tmp_path, monkeypatch):
    import io
    import tarfile

    from ragcun.data import download

    archive = tmp_path / "mirror" / download.MSMARCO_ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        for name in download.MSMARCO_FILES:
            data = b"1\tx\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(download.DownloadError, match="MD5 mismatch"):  # not the published archive
        download.download_msmarco(tmp_path / "out", base_url=archive.parent.as_uri(), progress=False)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(download, "MSMARCO_MD5", download.hashlib.md5(archive.read_bytes()).hexdigest())
    assert (download.download_msmarco(tmp_path / "out", base_url=archive.parent.as_uri(), progress=False)
            / "collection.tsv").read_text() == "1\tx\n"
    with tarfile.open(archive) as tf, pytest.raises(download.DownloadError, match="tar bomb"):
        download.safe_extract_tar(tf, tmp_path / "bomb", max_bytes=10)
