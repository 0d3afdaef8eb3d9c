"""The three-arm experiment end to end on a real SciFact slice with a tiny model: data, three arms,
shared base features for the reference and frozen arms, BEIR evaluation, isotropy, report, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ragcun.experiment import ExperimentError, load_experiment, run_experiment


def _mini_beir(data_root: Path, out: Path, n_train: int = 16, n_test: int = 8, n_extra: int = 60) -> Path:
    sci = data_root / "beir" / "scifact"

    def qrels(split):
        rows = [line.rstrip("\r\n").split("\t") for line in open(sci / "qrels" / f"{split}.tsv", encoding="utf-8")][1:]
        return rows

    train, test = qrels("train")[:n_train], qrels("test")[:n_test]
    judged = {d for _, d, _ in train + test}
    qids = {q for q, _, _ in train + test}
    corpus = [json.loads(line) for line in open(sci / "corpus.jsonl", encoding="utf-8")]
    rng = random.Random(0)
    others = [c for c in corpus if c["_id"] not in judged]
    keep = [c for c in corpus if c["_id"] in judged] + rng.sample(others, n_extra)
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w") as fh:
        for c in keep:
            c["text"] = c["text"][:400]
            fh.write(json.dumps(c) + "\n")
    with open(out / "queries.jsonl", "w") as fh:
        for line in open(sci / "queries.jsonl", encoding="utf-8"):
            if json.loads(line)["_id"] in qids:
                fh.write(line)
    for split, rows in (("train", train), ("test", test)):
        with open(out / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q, d, s in rows:
                fh.write(f"{q}\t{d}\t{s}\n")
    return out


CONFIG = """
[experiment]
name = "tiny"
output_dir = "{out}"
reference = "{model}"

[triplets]
sources = ["{data}"]
val_size = 4
val_corpus_size = 30
num_negatives = 1
seed = 1

[evaluation]
datasets = ["{data}"]
max_seq_length = 32
batch_size = 16
isotropy_num_slices = 64

[model]
base_model = "{model}"
output_dim = 16
hidden_dim = 32
max_seq_length = 32

[optim]
max_steps = 2
batch_size = 4
seed = 3

[loss]
num_slices = 32
temperature = 2.0

[output]
logging_steps = 1
save_steps = 2
report_to = []

[arms.baseline]
lambda_isotropy = 0.0

[arms.isotropy]
lambda_isotropy = 1.0

[arms.frozen]
lambda_isotropy = 1.0
freeze_base = true
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, data_root, tiny_model_path):
    root = tmp_path_factory.mktemp("experiment")
    data = _mini_beir(data_root, root / "scifact-mini")
    cfg = root / "tiny.toml"
    cfg.write_text(CONFIG.format(out=root / "run", model=tiny_model_path, data=data))
    report = run_experiment(cfg)
    return cfg, root / "run", report


def test_runs_every_stage(experiment):
    cfg, run, report = experiment
    for arm in ("baseline", "isotropy", "frozen"):
        summary = json.loads((run / "arms" / arm / "train_summary.json").read_text())
        assert summary["global_steps"] == 2
        assert (run / "arms" / arm / "best" / "modules.json").exists()
    iso = json.loads((run / "arms" / "isotropy" / "train_summary.json").read_text())["config"]
    base = json.loads((run / "arms" / "baseline" / "train_summary.json").read_text())["config"]
    assert iso["lambda_isotropy"] == 1.0 and base["lambda_isotropy"] == 0.0
    for label in ("reference", "baseline", "isotropy", "frozen"):
        res = json.loads((run / "results" / f"{label}.json").read_text())
        (scores,) = res["results"].values()
        assert 0.0 <= scores["ndcg@10"] <= 1.0
    assert json.loads((run / "results" / "reference.json").read_text())["score"] == "cos"
    assert json.loads((run / "results" / "frozen.json").read_text())["score"] == "l2"
    assert "baseline" in report["markdown"] and "frozen" in report["markdown"]
    assert (run / "report" / "report.md").exists()
    assert list((run / "isotropy").glob("*/isotropy.json"))


def test_frozen_and_reference_share_one_base_pass(experiment):
    """The reference's and the frozen arm's corpus vectors were derived from one pass of the shared base
    (the run checks them against direct encoding), and the frozen arm really trained its head only."""
    import os

    import numpy as np

    from ragcun import IsotropicGaussianEncoder

    _cfg, run, _ = experiment
    cache = Path(os.environ["RAGCUN_CACHE_DIR"]) / "embeddings"
    seeded = [json.loads(p.read_text()) for p in cache.glob("*/meta.json")]
    assert sum(1 for m in seeded if m.get("seeded")) == 2  # reference + frozen
    best = run / "arms" / "frozen" / "best"
    assert json.loads((best / "ragcun_config.json").read_text())["freeze_base"] is True
    frozen = IsotropicGaussianEncoder.from_pretrained(best)
    assert np.isfinite(frozen.encode(["a test"])).all()


def test_rerun_skips_finished_stages(experiment):
    cfg, run, _ = experiment
    before = {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json")}
    run_experiment(cfg)
    after = {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json")}
    assert before == after


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nnmae = "x"\n[evaluation]\ndatasets = ["scifact"]\n[triplets]\nsources = ["scifact"]\n')
    with pytest.raises(ExperimentError, match=r"bad\.toml.*nmae"):
        load_experiment(bad)
    bad.write_text('[evaluation]\ndatasets = ["scifact"]\n[triplets]\nsources = ["scifact"]\n[experiment]\narms = ["mystery"]\n')
    with pytest.raises(ExperimentError, match="mystery"):
        load_experiment(bad)
    bad.write_text('[triplets]\nsources = ["scifact"]\n')
    with pytest.raises(ExperimentError, match="datasets"):
        load_experiment(bad)


def test_demo_and_paper_configs_parse():
    repo = Path(__file__).resolve().parents[1]
    from ragcun.experiment import arm_config

    for name in ("demo", "paper"):
        exp = load_experiment(repo / "configs" / f"{name}.toml")
        assert list(exp.arms) == ["baseline", "isotropy", "frozen"]
        frozen = arm_config(exp, "frozen")
        assert frozen.freeze_base and frozen.lambda_isotropy > 0
        assert arm_config(exp, "baseline").lambda_isotropy == 0
