"""`ragcun data ...` through typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ragcun.cli import app

runner = CliRunner()


def test_stats_json(data_root):
    res = runner.invoke(app, ["data", "stats", "scifact", "--json", "--data-dir", str(data_root)])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st["documents"] == 5183
    assert st["splits"]["test"]["queries"] == 300 and st["splits"]["test"]["qrels"] == 339
    assert st["splits"]["train"]["queries"] == 809 and st["splits"]["train"]["qrels"] == 919
    assert st["doc_words"]["mean"] > 100


def test_stats_missing_dataset(tmp_path):
    res = runner.invoke(app, ["data", "stats", "nosuch", "--data-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "not found" in res.output


def test_download_unknown(tmp_path):
    res = runner.invoke(app, ["data", "download", "nosuch", "--dest", str(tmp_path)])
    assert res.exit_code == 1 and "unknown BEIR dataset" in res.output


def test_triplets_and_pairs_cli(tmp_path, data_root):
    out = tmp_path / "t"
    res = runner.invoke(app, ["data", "triplets", "scifact", "--out", str(out), "--data-dir", str(data_root),
                              "--max-train-samples", "40", "--val-size", "10", "--num-negatives", "2",
                              "--val-corpus-size", "300"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["train_examples"] == 40 and m["counts"]["validation_queries"] == 10
    res = runner.invoke(app, ["data", "pairs", str(data_root / "beir" / "scifact" / "corpus.jsonl"), "--out",
                              str(tmp_path / "p"), "--max-pairs", "20", "--val-size", "5",
                              "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "p" / "train.jsonl").read_text().splitlines()) == 20
