"""Model resolution: local path, packaged aliases, split-zip assembly with hash check, clear errors."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from ragcun.files import assemble_split_zip
from ragcun.resolve import ModelNotFoundError, load_sentence_transformer, resolve_model


def test_alias_resolves_to_packaged_minilm(minilm_path):
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        res = resolve_model(name)
        assert res.source == "package"
        assert Path(res.location) == Path(minilm_path)


def test_local_path_wins(tiny_model_path):
    res = resolve_model(tiny_model_path)
    assert res.source == "local" and res.location == tiny_model_path


def test_unknown_name_goes_to_hub_and_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("someone/no-such-model").source == "hub"
    with pytest.raises(ModelNotFoundError) as err:
        load_sentence_transformer("someone/no-such-model")
    msg = str(err.value)
    assert "someone/no-such-model" in msg and "local directory" in msg and "Hub" in msg


def test_file_is_not_a_model(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(str(f))


def _split_zip(tmp_path, files: dict[str, bytes], n_parts: int = 3, top: str = "all-mpnet-base-v2"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}", data)
    raw = buf.getvalue()
    size = -(-len(raw) // n_parts)
    parts = []
    for i in range(n_parts):
        p = tmp_path / f"model.zip.{i + 1:03d}"
        p.write_bytes(raw[i * size : (i + 1) * size])
        parts.append(p)
    return parts


def test_assemble_split_zip_checks_hash(tmp_path):
    weights = b"weights" * 1000
    parts = _split_zip(tmp_path, {"model.safetensors": weights, "config.json": b"{}"})
    target = tmp_path / "out"
    assemble_split_zip(parts, target, expected={"model.safetensors": hashlib.sha256(weights).hexdigest()})
    assert (target / "model.safetensors").read_bytes() == weights
    assert (target / "config.json").exists()

    bad_target = tmp_path / "bad"
    with pytest.raises(ValueError, match="sha256"):
        assemble_split_zip(parts, bad_target, expected={"model.safetensors": "0" * 64})
    assert not bad_target.exists()


def test_assemble_rejects_parts_out_of_order(tmp_path):
    parts = _split_zip(tmp_path, {"model.safetensors": bytes(range(256)) * 50})
    with pytest.raises(ValueError, match="out-of-order"):
        assemble_split_zip(list(reversed(parts)), tmp_path / "out")


def test_models_list_is_a_table_without_log_lines():
    from typer.testing import CliRunner

    from ragcun.cli import app

    res = CliRunner().invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "INFO" not in res.output
    text = "".join(res.output.split())
    assert "all-minilm-l6-v2" in text and "embeddinggemma-300m" in text and "(package)" in text
