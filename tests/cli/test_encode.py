"""``ragcun encode``: vectors with their ids, as .npy (+ .ids.json) or Parquet, equal to the model's own
encode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ragcun.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    path = tmp_path_factory.mktemp("encode") / "docs.jsonl"
    rows = [{"id": f"d{i}", "text": t}
            for i, t in enumerate(["alpha beta", "gamma delta epsilon", "zeta", "eta theta"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_npy_with_ids_equals_the_models_own_vectors(docs, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "vecs.npy"
    res = runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(docs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    ids = json.loads((tmp_path / "vecs.ids.json").read_text())
    assert ids == ["d0", "d1", "d2", "d3"]
    expected = SentenceTransformer(tiny_model_path, device="cpu").encode_document(
        ["alpha beta", "gamma delta epsilon", "zeta", "eta theta"], convert_to_numpy=True)
    assert np.allclose(np.load(out), expected, atol=1e-5)


def test_parquet_holds_id_vector_and_norm(docs, tiny_model_path, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "vecs.parquet"
    res = runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(docs), "--out", str(out),
                              "--kind", "query", "--limit", "3"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out).to_pydict()
    assert table["id"] == ["d0", "d1", "d2"]
    vecs = np.asarray(table["vector"], dtype=np.float32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), table["norm"], rtol=1e-5)


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--out", "{tmp}/v.csv"], "the extension must be .npy or .parquet"),
    (["--out", "{tmp}/v.npy", "--kind", "passage"], "--kind must be document or query"),
    (["--out", "{tmp}/v.npy", "--limit", "0"], "--limit must be at least 1"),
    (["--out", "{tmp}/v.npy", "--batch-size", "0"], "--batch-size must be between 1"),
])
def test_bad_options_are_one_line(extra, fragment, docs, tiny_model_path, tmp_path):
    res = runner.invoke(app, ["encode", "-m", tiny_model_path, "--docs", str(docs),
                              *[a.format(tmp=tmp_path) for a in extra]])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert fragment in " ".join(res.output.split())
    assert not (tmp_path / "v.npy").exists() and not (tmp_path / "v.csv").exists()
