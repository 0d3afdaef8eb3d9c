"""The three-arm experiment end to end on a real SciFact slice with a tiny model: data, three arms,
shared base features for the reference and frozen arms, BEIR evaluation, isotropy, report, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragcun.experiment import ExperimentError, load_experiment, run_experiment

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

[training]
max_steps = 2
per_device_train_batch_size = 4
seed = 3
logging_steps = 1
save_steps = 2
report_to = []

[loss]
num_slices = 32
temperature = 2.0

[arms.baseline]
lambda_isotropy = 0.0

[arms.isotropy]
lambda_isotropy = 1.0

[arms.frozen]
lambda_isotropy = 1.0
freeze_base = true

[arms.query]
base_arm = "frozen"
train_side = "query"
teacher = "hybrid"
teacher_candidates = 4
temperature = 20.0
learning_rate = 1e-3
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, beir_slice, tiny_model_path):
    root = tmp_path_factory.mktemp("experiment")
    data = beir_slice("scifact", {"train": 12, "test": 8}, extra_docs=60, max_chars=400, name="scifact-mini")
    cfg = root / "tiny.toml"
    cfg.write_text(CONFIG.format(out=root / "run", model=tiny_model_path, data=data))
    report = run_experiment(cfg)
    return cfg, root / "run", report


def test_runs_every_stage(experiment):
    cfg, run, report = experiment
    for arm in ("baseline", "isotropy", "frozen", "query"):
        summary = json.loads((run / "arms" / arm / "train_summary.json").read_text())
        assert summary["global_steps"] == 2
        assert (run / "arms" / arm / "best" / "modules.json").exists()
    iso = json.loads((run / "arms" / "isotropy" / "train_summary.json").read_text())["config"]
    base = json.loads((run / "arms" / "baseline" / "train_summary.json").read_text())["config"]
    assert iso["loss"]["lambda_isotropy"] == 1.0 and base["loss"]["lambda_isotropy"] == 0.0
    for label in ("reference", "baseline", "isotropy", "frozen", "frozen.cos", "frozen.base",
                  "isotropy.base"):
        res = json.loads((run / "results" / f"{label}.json").read_text())
        (scores,) = res["results"].values()
        assert 0.0 <= scores["ndcg@10"] <= 1.0
    assert json.loads((run / "results" / "reference.json").read_text())["score"] == "cos"
    for label in ("reference", "frozen"):  # a TREC run and its qrels per model, for trec_eval / ir_measures
        lines = (run / "results" / "runs" / f"{label}.run").read_text().splitlines()
        assert lines and len(lines[0].split()) == 6 and (run / "results" / "runs" / f"{label}.qrels").exists()
    assert json.loads((run / "results" / "frozen.json").read_text())["score"] == "l2"
    assert json.loads((run / "results" / "frozen.cos.json").read_text())["score"] == "cos"
    assert json.loads((run / "results" / "frozen.base.json").read_text())["view"] == "base"
    assert not (run / "results" / "query.base.json").exists()  # a query tower has no one base to look behind
    assert "baseline" in report["markdown"] and "frozen" in report["markdown"]
    (main,) = [md for key, md in report["experiment_tables"].items() if key.startswith("main:")]
    assert "Δ vs reference" in main and "SIGReg ratio" in main
    assert any(key.startswith("views:") for key in report["experiment_tables"])
    ann = json.loads((run / "results" / "approximate_search.json").read_text())
    assert {r["model"] for r in ann["rows"]} == {"reference", "baseline", "isotropy", "frozen", "query"}
    assert all(0.0 <= r["indexes"]["hnsw"]["recall"] <= 1.0 for r in ann["rows"])
    assert (run / "report" / "report.md").exists() and (run / "report" / "experiment.md").exists()
    assert list((run / "isotropy").glob("*/isotropy.json"))


def test_one_corpus_pass_per_distinct_base(experiment):
    """Every model's corpus vectors were derived from one pass of its body (the run checks them against
    direct encoding): the reference, the frozen arm and the base views of the frozen arm share the
    untouched base's pass, so three bodies (reference, baseline, isotropy) are encoded for all the views;
    and the frozen arm really trained its head only."""
    import os

    import numpy as np

    from ragcun import IsotropicGaussianEncoder

    _cfg, run, _ = experiment
    cache = Path(os.environ["RAGCUN_CACHE_DIR"]) / "embeddings"
    metas = [json.loads(p.read_text()) for p in cache.glob("*/meta.json")]
    bodies = [m for m in metas if str(m["dataset"]).endswith("-body") and m["documents"] < 200]
    assert len(bodies) == 3
    # seven views; the frozen arm's base view *is* the reference (same modules, same weights): six entries,
    # less the frozen arm's own, which the query arm's training encoded first and which the query arm and its
    # view read (its documents are the frozen arm's); the five whitened bases and the two corrections share
    # the reference's body too (seven more tails)
    assert sum(1 for m in metas if m.get("seeded")) == 5 + 5 + 2
    # so the query arm's corpus is the frozen arm's, measure for measure
    (iso,) = (run / "isotropy").glob("*/isotropy.json")
    corpus = {r["label"]: r for r in json.loads(iso.read_text())["results"] if r["kind"] == "corpus"}
    skip = {"label", "model", "model_fingerprint"}
    assert ({k: v for k, v in corpus["query"].items() if k not in skip}
            == {k: v for k, v in corpus["frozen"].items() if k not in skip})
    best = run / "arms" / "frozen" / "best"
    assert json.loads((best / "ragcun_config.json").read_text())["freeze_base"] is True
    frozen = IsotropicGaussianEncoder.from_pretrained(best)
    assert np.isfinite(frozen.encode(["a test"])).all()


def test_whitening_is_fitted_on_training_documents_only(experiment):
    """The post-hoc whitening reference is the untouched base with a linear head that whitens the base's
    features of the *training* documents (never the test corpus): its weights are exactly the tempered
    whitening of those features, they differ from a whitening fitted on the test corpus, and the whitened
    training features have the identity covariance at p = 1."""
    import torch

    from ragcun.data.beir import doc_text, load_beir
    from ragcun.experiment.whitening import training_documents, whitening_dir
    from ragcun.fingerprint import texts_fingerprint
    from ragcun.modeling import IsotropicGaussianEncoder, whitening_map

    cfg, run, report = experiment
    exp = load_experiment(cfg)
    docs = training_documents(exp, exp.whitening.max_documents, {})
    model = IsotropicGaussianEncoder.from_pretrained(whitening_dir(exp, 1.0))
    fit = model.ragcun_config["head_init"]["fit"]
    assert fit["on"] == "training documents" and fit["documents"] == len(docs)
    assert fit["texts_fingerprint"] == texts_fingerprint([str(i) for i in range(len(docs))], docs)
    feats = model.base_features(docs)
    weight, bias, _ = whitening_map(feats, 16, power=1.0)
    head = model.head_modules[0].linear
    torch.testing.assert_close(head.weight[: weight.shape[0]].double(), weight, rtol=1e-4, atol=1e-5)
    out = (feats.double() @ weight.T + bias)
    torch.testing.assert_close(torch.cov(out.T),
                               torch.eye(weight.shape[0], dtype=torch.float64) * 16 / weight.shape[0],
                               rtol=1e-3, atol=1e-3)
    test = load_beir(exp.evaluation.datasets[0], split="test")
    test_docs = [doc_text(d) for d in test.corpus.values()]
    assert not set(test_docs) <= set(docs)  # the test corpus has documents no training triplet holds
    other, _, _ = whitening_map(model.base_features(test_docs), 16, power=1.0)
    assert other.shape != weight.shape or not torch.allclose(other, weight, atol=1e-3)
    (curve,) = [md for key, md in report["experiment_tables"].items() if key.startswith("whitening:")]
    assert curve.count("\n") >= 6  # header, rule and the five powers
    assert any(key.startswith("vs_whitening:") for key in report["experiment_tables"])
    assert any(key.startswith("isotropy:") for key in report["experiment_tables"])


def test_the_training_free_corrections_are_mean_removal_exactly(experiment):
    """The corrections of arXiv 2511.11041 beside the whitening curve: the base centred on the training
    documents' mean (and its top principal direction projected out), ranked by cosine, in their own table."""
    import torch

    from ragcun.experiment.whitening import correction_dir, training_documents
    from ragcun.modeling import IsotropicGaussianEncoder

    cfg, run, report = experiment
    exp = load_experiment(cfg)
    docs = training_documents(exp, exp.whitening.max_documents, {})
    for label, removed in (("center", 0), ("center-pc1", 1)):
        model = IsotropicGaussianEncoder.from_pretrained(correction_dir(exp, label))
        feats = model.base_features(docs).double()
        with torch.no_grad():
            out = model.head_modules[0].linear(feats.float()).double()
        torch.testing.assert_close(out.mean(0), torch.zeros(feats.shape[1], dtype=torch.float64),
                                   atol=1e-4, rtol=0)  # centred on the training documents
        centred = feats - feats.mean(0)
        if removed:
            top = torch.linalg.svd(centred, full_matrices=False)[2][0]
            assert abs(float((out @ top).abs().max())) < 1e-3  # nothing left along the top direction
            centred = centred - (centred @ top)[:, None] * top[None, :]
        torch.testing.assert_close(out, centred, atol=1e-4, rtol=1e-4)
    (table,) = [md for key, md in report["experiment_tables"].items() if key.startswith("corrections:")]
    assert "center:" in table and "center-pc1:" in table


def test_rerun_skips_finished_stages(experiment):
    cfg, run, _ = experiment
    before = {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json")}
    run_experiment(cfg)
    after = {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json")}
    assert before == after
    card = (run / "arms" / "isotropy" / "best" / "README.md").read_text()
    assert card.count("<!-- ragcun:results -->") == 1  # replaced on the rerun, not added twice


def test_model_cards_and_names_come_from_the_experiment(experiment):
    """Each arm's card holds its test-set results (the report's numbers), isotropy and training; results,
    run files and ``ragcun evaluate`` name the model by experiment and arm, never "best"."""
    from ragcun.evaluation.beir_eval import evaluate_model
    from ragcun.modeling import run_info

    cfg, run, report = experiment
    best = run / "arms" / "isotropy" / "best"
    info = run_info(best)
    assert info["name"] == "tiny/isotropy" and info["loss"]["lambda_isotropy"] == 1.0
    assert info["train_examples"] > 0
    assert run_info(run / "arms" / "frozen" / "best")["model"]["freeze_base"] is True  # cached path too
    card = (best / "README.md").read_text()
    (ds,) = report["datasets"]
    ndcg = 100 * report["values"]["ndcg@10"]["isotropy"][ds]
    assert "## ragcun evaluation: `tiny/isotropy`" in card and f"| {ndcg:.2f} |" in card
    assert "SIGReg ratio" in card and "λ_iso = 1" in card and "model.similarity(q, d)" in card
    assert card.index("<!-- ragcun:results -->") < card.index("## Model Details")
    from sentence_transformers import SentenceTransformer

    st_card = SentenceTransformer(str(best)).model_card_data
    assert "tiny/isotropy" in (st_card.model_name or "") or "tiny/isotropy" in card
    res = evaluate_model(str(best), load_experiment(cfg).evaluation.datasets[0], batch_size=16,
                         max_seq_length=32, show_progress_bar=False, run_file=run / "eval-run.trec")
    assert res["model"] == "tiny/isotropy"
    first = next(iter((run / "eval-run.trec").read_text().splitlines()))
    assert first.split()[-1] == "tiny_isotropy-l2"


_EVAL, _TRIP = '[evaluation]\ndatasets = ["scifact"]\n', '[triplets]\nsources = ["scifact"]\n'


@pytest.mark.parametrize("text, message", [
    ('[experiment]\nnmae = "x"\n' + _EVAL + _TRIP, r"bad\.toml.*nmae"),
    (_EVAL + _TRIP + '[experiment]\narms = ["mystery"]\n', "mystery"),
    (_TRIP, "evaluation"),
    (_EVAL + _TRIP + "num_negativs = 2\n",
     r"bad\.toml \[triplets\]: unknown key 'num_negativs' \(did you mean 'num_negatives'\?\)"),
    ('[evaluation]\ndatasets = "scifact"\nbatch_size = "big"\n' + _TRIP,
     r"\[evaluation\]: batch_size expects int"),
    (_EVAL + _TRIP + "[arms.baseline]\nlambda_isotropy = nan\n",
     r"\[arms.baseline\]: lambda_isotropy must be a finite number"),
    (_EVAL + 'precision = "fp16"\n' + _TRIP, r"precision must be auto, fp32, bf16, int8 \(got 'fp16'\)"),
    (_EVAL + _TRIP + '[experiment]\noptional_arms = ["peer"]\n',
     r"\[experiment\]: optional arm 'peer' has no \[arms.peer\] table"),
    (_EVAL + _TRIP + '[experiment]\noptional_arms = ["peer"]\n[arms.peer]\nst_los = "mnrl"\n',
     r"\[arms.peer\]: unknown .*'st_los' \(did you mean 'st_loss'\?\)"),
])
def test_config_errors_name_the_file(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ExperimentError, match=message):
        load_experiment(bad)


def test_the_runtime_key_and_its_old_name(tmp_path, caplog):
    """``[evaluation] runtime`` names the encoding runtime; ``backend``, its old name, still works for one
    release with a warning naming the file, and never beside the new one."""
    cfg = tmp_path / "rt.toml"
    cfg.write_text('[evaluation]\ndatasets = ["scifact"]\nbackend = "onnx"\n' + _TRIP)
    with caplog.at_level("WARNING"):
        assert load_experiment(cfg).evaluation.runtime == "onnx"
    assert "rt.toml [evaluation]: 'backend' is deprecated, use 'runtime'" in caplog.text
    cfg.write_text('[evaluation]\ndatasets = ["scifact"]\nbackend = "onnx"\nruntime = "torch"\n' + _TRIP)
    with pytest.raises(ExperimentError, match="set 'runtime' only"):
        load_experiment(cfg)


def test_optional_arms_run_only_when_asked_for(tmp_path):
    """An optional arm is defined and checked with the others, and joins the run (after them) only with
    ``--with``; naming an arm that is not optional is refused."""
    cfg = tmp_path / "opt.toml"
    cfg.write_text(_EVAL + _TRIP + '[experiment]\narms = ["baseline", "frozen"]\noptional_arms = ["peer"]\n'
                   '[arms.peer]\nst_loss = "mnrl"\nlambda_isotropy = 0.0\n')
    assert list(load_experiment(cfg).arms) == ["baseline", "frozen"]
    exp = load_experiment(cfg, with_arms=["peer"])
    assert list(exp.arms) == ["baseline", "frozen", "peer"] and exp.arms["peer"]["st_loss"] == "mnrl"
    with pytest.raises(ExperimentError, match="--with 'frozen' is not an optional arm"):
        load_experiment(cfg, with_arms=["frozen"])


def test_demo_and_paper_configs_parse():
    repo = Path(__file__).resolve().parents[2]
    from ragcun.experiment import arm_config

    for name in ("demo", "paper", "scifact"):
        exp = load_experiment(repo / "configs" / f"{name}.toml", with_arms=["st-distill", "st-mnrl"][
            : 2 if name == "demo" else 0])
        assert list(exp.arms)[:3] == ["baseline", "isotropy", "frozen"]
        later = {arm: arm_config(exp, arm) for arm in list(exp.arms)[3:]}
        if name != "paper":  # a query tower on the frozen arm's documents
            query = later["query"]
            assert query.train_side == "query" and str(query.base_model).endswith("frozen/best")
        peers = {arm: cfg.st_loss for arm, cfg in later.items() if cfg.train_side != "query"}
        assert set(peers.values()) <= {"mnrl", "distill_kl"}
        assert name == "paper" or "distill_kl" in peers.values()  # sentence-transformers' recipe beside
        frozen = arm_config(exp, "frozen")
        assert frozen.freeze_base and frozen.lambda_isotropy > 0
        assert arm_config(exp, "baseline").lambda_isotropy == 0


def test_sweep_trains_one_arm_per_lambda(experiment):
    """The sweep on a tiny model: one frozen arm per λ, the reference and the whitening curve beside them,
    a table and a figure."""
    from ragcun.experiment import run_sweep

    cfg, run, _ = experiment
    summary = run_sweep(cfg, lambdas=[0.0, 0.5], arm="frozen")
    rows = summary["rows"]
    assert [(r["lambda"], r["power"]) for r in rows] == [(None, None), (0.0, None), (0.5, None),
                                                         *((None, p) for p in (0.0, 0.25, 0.5, 0.75, 1.0))]
    assert all(r["sigreg_ratio_fixed"] > 0 and r["top_eigenvalue_ratio"] >= 1 for r in rows)
    assert "whitening p = 1" in summary["markdown"]
    for r in rows:
        assert r["ci_low"] <= r["ndcg@10"] <= r["ci_high"] and 0.0 <= r["ndcg@10"] <= 1.0
        assert r["sigreg_ratio"] > 0 and 0.0 <= r["isoscore"] <= 1.0
    assert rows[1]["perm_p"] is not None and rows[0]["perm_p"] is None
    lam = [json.loads((run / "sweep" / "frozen" / "arms" / f"frozen-lam{v}" / "train_summary.json")
                      .read_text())["config"]["loss"]["lambda_isotropy"] for v in ("0", "0.5")]
    assert lam == [0.0, 0.5]
    assert (run / "sweep" / "frozen" / "report" / "sweep.png").stat().st_size > 10_000
    assert "λ_iso" in summary["markdown"]
    again = run_sweep(cfg, lambdas=[0.0, 0.5], arm="frozen")  # finished λ values are reused
    assert again["rows"] == rows


#: What a user must not see on ragcun's log without -v (issue #16): library chatter and bars.
CHATTER = ("No device provided", "Loading weights", "Computing widget examples", "Writing model shards",
           "Saving the dataset", "Building index from IDs", "Batches:", "DEBUG", "it/s]", "pin_memory",
           "Warning:")


def test_cli_log_is_quiet_when_not_a_terminal(tmp_path, beir_slice, tiny_model_path):
    """A real ``ragcun experiment run`` in a subprocess (stderr is a pipe, as in a log file): every stage
    logs, and none of the libraries' chatter or progress bars reaches the log."""
    import os
    import subprocess
    import sys

    data = beir_slice("scifact", {"train": 12, "test": 8}, extra_docs=60, max_chars=400, name="scifact-mini")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run", model=tiny_model_path, data=data))
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120")
    res = subprocess.run([sys.executable, "-m", "ragcun", "experiment", "run", str(cfg)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    log = res.stderr + res.stdout
    assert "arm frozen: training" in log and "validation at step" in log
    found = [c for c in CHATTER if c in log]
    assert not found, f"chatter on the log: {found}"
    assert max(len(line) for line in log.splitlines()) <= 400


@pytest.mark.slow
def test_every_latex_table_compiles(experiment, tmp_path):
    """Every .tex table the experiment writes compiles with pdflatex (booktabs, no raw Unicode).

    Needs a TeX install: ``apt-get install texlive-latex-base texlive-latex-recommended``."""
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    import re

    from ragcun.experiment import run_sweep

    cfg, run, _ = experiment
    run_sweep(cfg, lambdas=[0.0, 0.5], arm="frozen")  # its table too (reused when the sweep test ran first)
    tables = sorted((run / "report").glob("*.tex")) + sorted(run.glob("sweep/*/report/*.tex"))
    assert len(tables) >= 6 and any(t.name == "sweep.tex" for t in tables)
    for tex in tables:
        body = tex.read_text()
        assert all(ord(c) < 128 for c in body), (
            f"{tex.name}: raw Unicode {[c for c in body if ord(c) >= 128][:5]}")
        # λ_iso, minus
        assert "\\_iso" not in body and not re.search(r"(^|[\s\[(&])-\d", body, re.M), tex.name
        doc = tmp_path / f"doc-{tex.stem}.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body
                       + "\n\\end{document}\n")
        res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{tex.name} does not compile:\n{res.stdout[-1500:]}"


def test_arm_labels_show_the_lambda_the_arm_trains_with(tmp_path):
    """A custom arm's table without λ trains at the file's top-level λ; its label must say so
    (it said λ = 1)."""
    from ragcun.experiment import arm_config
    from ragcun.experiment.views import describe_arm

    cfg = tmp_path / "lam.toml"
    cfg.write_text('[evaluation]\ndatasets = ["scifact"]\n[triplets]\nsources = ["scifact"]\n[loss]\n'
                   'lambda_isotropy = 0.3\n[experiment]\narms = ["mine", "frozen"]\nbaseline = "mine"\n'
                   '[arms.mine]\nmax_train_samples = 8\n[arms.frozen]\nfreeze_base = true\n'
                   'lambda_isotropy = 2.0\n')
    exp = load_experiment(cfg)
    for arm, label in (("mine", "λ_iso = 0.3, full fine-tuning"), ("frozen", "λ_iso = 2, head only")):
        assert describe_arm(exp, arm) == label
        assert f"λ_iso = {arm_config(exp, arm).lambda_isotropy:g}" in label


def test_parallel_arms_train_in_spawned_processes(tmp_path, beir_slice, tiny_model_path):
    """--parallel runs train_arm itself in one spawned process per arm (no command line in between), and the
    arms it trains are the ones a sequential run trains."""
    from ragcun.experiment.config import load_experiment
    from ragcun.experiment.run import train_arms_parallel

    data = beir_slice("scifact", {"train": 12, "test": 8}, extra_docs=60, max_chars=400, name="scifact-par")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run", model=tiny_model_path, data=data))
    run_experiment(cfg, arms=["baseline"], train_only=True)  # the data, and one arm the sequential way
    exp = load_experiment(cfg)
    train_arms_parallel(exp, ["baseline", "isotropy", "frozen"], [], None)
    for arm in ("isotropy", "frozen"):
        summary = json.loads((tmp_path / "run" / "arms" / arm / "train_summary.json").read_text())
        assert (summary["global_steps"] == 2
                and (tmp_path / "run" / "arms" / arm / "best" / "modules.json").exists())
    assert json.loads((tmp_path / "run" / "arms" / "frozen" / "train_summary.json")
                      .read_text())["config"]["model"]["freeze_base"]


def test_each_model_is_loaded_once_per_run(experiment, monkeypatch):
    """The stages share one ViewModels: a model directory is opened once however many views, stages and
    datasets use it, and its max_seq_length goes through the one checked setter."""
    import ragcun.encoding.models as models_mod
    from ragcun.experiment.config import load_experiment
    from ragcun.experiment.views import ViewModels, evaluation_views

    cfg, _, _ = experiment
    exp = load_experiment(cfg)
    views = evaluation_views(exp)
    opened = []
    real = models_mod.open_model
    monkeypatch.setattr(models_mod, "open_model",
                        lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    vm = ViewModels(exp.evaluation.max_seq_length, exp.evaluation)
    first, again = vm(views), vm([v for v in views if v.measured])
    assert sorted(opened) == sorted({v.model for v in views}) and len(opened) < len(views)
    assert all(again[label] is first[label] for label in again if not label.endswith("base"))
    assert all(m.max_seq_length == exp.evaluation.max_seq_length for m in first.values())


def test_one_loop_over_views_and_stages_resumes_what_is_missing(experiment, monkeypatch):
    """The evaluation is one loop over views × stages: with the BEIR results written and the isotropy and
    approximate-search results removed, a rerun of the loop measures only those two, loads each model
    directory once for both, and writes the same numbers as the first run."""
    import ragcun.encoding.models as models_mod
    from ragcun.experiment.stages import ApproximateSearchStage, BeirStage, IsotropyStage, evaluate
    from ragcun.experiment.views import ViewModels, evaluation_views

    cfg, run, _ = experiment
    exp = load_experiment(cfg)
    ev = exp.evaluation
    ((iso_file, ann_file),) = [(p, run / "results" / "approximate_search.json")
                               for p in run.glob("isotropy/*/isotropy.json")]
    before_iso, before_ann = json.loads(iso_file.read_text()), json.loads(ann_file.read_text())
    results = {p: p.stat().st_mtime_ns for p in (run / "results").glob("*.json") if p != ann_file}
    views = evaluation_views(exp)
    settings = ev.encode_settings()
    labels = [v.label for v in views if v.measured]
    # a finished report is kept; one that lacks a model to measure (an arm added later) is redone
    assert IsotropyStage(ev, settings, run / "isotropy", labels).todo == []
    assert IsotropyStage(ev, settings, run / "isotropy", [*labels, "added"]).todo == ev.datasets
    iso_file.unlink()
    ann_file.unlink()
    opened = []
    real = models_mod.open_model
    monkeypatch.setattr(models_mod, "open_model",
                        lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    stages = [BeirStage(ev, settings, run / "results"), IsotropyStage(ev, settings, run / "isotropy", labels),
              ApproximateSearchStage(ev, settings, ann_file)]
    measured = []
    for stage in stages:
        monkeypatch.setattr(stage, "measure", lambda v, m, s=stage, f=stage.measure:
                            measured.append((s.name, v.label)) or f(v, m))
    out = evaluate(views, stages, ViewModels(ev.max_seq_length, ev))
    assert {p: p.stat().st_mtime_ns for p in results} == results  # BEIR: finished, skipped
    assert not any(name == "evaluate" for name, _ in measured)
    assert [label for name, label in measured if name == "isotropy"] == [v.label for v in views if v.measured]
    assert {label for name, label in measured if name == "approximate_search"} == {
        "reference", "baseline", "isotropy", "frozen", "query"}
    # each directory once, both stages
    assert sorted(opened) == sorted({v.model for v in views if v.measured})
    assert out["isotropy"][ev.datasets[0]] == iso_file and out["approximate_search"] == ann_file
    after_iso = json.loads(iso_file.read_text())
    keys = ("label", "kind", "n", "sigreg_ratio", "isoscore", "top_eigenvalue_ratio")
    assert ([[r[k] for k in keys] for r in after_iso["results"]]
            == [[r[k] for k in keys] for r in before_iso["results"]])
    recall = [(r["model"], r["indexes"]["hnsw"]["recall"]) for r in json.loads(ann_file.read_text())["rows"]]
    assert recall == [(r["model"], r["indexes"]["hnsw"]["recall"]) for r in before_ann["rows"]]


TEACHER_CONFIG = CONFIG.replace("isotropy_num_slices = 64\n", "isotropy_num_slices = 64\nhybrid = true\n") \
    .replace("[loss]", "[teacher]\nteacher_candidates = 2\n\n[loss]") \
    .replace('[arms.baseline]\nlambda_isotropy = 0.0\n',
             '[arms.baseline]\nlambda_isotropy = 0.0\nteacher = "hybrid"\nfreeze_layers = 1\n') \
    .replace('[arms.isotropy]\nlambda_isotropy = 1.0\n',
             '[arms.isotropy]\nbase_arm = "baseline"\nlambda_isotropy = 1.0\nteacher = "hybrid"\n'
             'freeze_base = true\n') \
    + ('[arms.st-distill]\nst_loss = "distill_kl"\nlambda_isotropy = 0.0\nteacher = "hybrid"\n'
       'freeze_layers = 1\n')


def test_teacher_arms_and_hybrid_rows(tmp_path, beir_slice, tiny_model_path):
    """A hybrid teacher through the experiment: the baseline fine-tunes above a cached prefix, the isotropy
    arm trains a new head on the baseline's body (base_arm), and BM25 and every fusion get their rows."""
    import torch
    from sentence_transformers import SentenceTransformer

    data = beir_slice("scifact", {"train": 12, "test": 8}, extra_docs=60, max_chars=400, name="scifact-mini")
    cfg = tmp_path / "teacher.toml"
    cfg.write_text(TEACHER_CONFIG.format(out=tmp_path / "run", model=tiny_model_path, data=data))
    run_experiment(cfg)
    run = tmp_path / "run"
    base = json.loads((run / "arms" / "baseline" / "train_summary.json").read_text())
    iso = json.loads((run / "arms" / "isotropy" / "train_summary.json").read_text())
    assert base["cached_prefix"] and base["data"]["teacher"]["teacher"]["kind"] == "hybrid"
    assert iso["config"]["model"]["base_model"] == str(run / "arms" / "baseline" / "best")
    a = SentenceTransformer(str(run / "arms" / "baseline" / "best"), device="cpu")
    b = SentenceTransformer(str(run / "arms" / "isotropy" / "best"), device="cpu")
    body = {k: v for k, v in a.state_dict().items() if k.startswith("0.")}
    assert body and all(torch.equal(v, b.state_dict()[k]) for k, v in body.items())  # the same body
    assert len(b) == len(a)  # the baseline's head replaced, not stacked
    for label in ("bm25", "reference+bm25", "baseline+bm25", "isotropy+bm25", "frozen+bm25"):
        res = json.loads((run / "results" / f"{label}.json").read_text())
        assert res["hybrid"]["weights"]["bm25"] > 0
    report = (run / "report" / "experiment.md").read_text()
    assert "Fused with BM25" in report and "on baseline's fine-tuned base" in report
    # the sentence-transformers peer: its own cosine, no head to look behind, measured and fused like an arm
    peer = json.loads((run / "results" / "st-distill.json").read_text())
    assert peer["score"] == "cos" and not (run / "results" / "st-distill.base.json").exists()
    assert "st-distill+bm25" in report and "sentence-transformers DistillKLDivLoss (cosine)" in report
    iso_rows = json.loads(next(run.glob("isotropy/*/isotropy.json")).read_text())["results"]
    assert {"st-distill", "baseline"} <= {r["label"] for r in iso_rows}
    assert "| st-distill |" not in next(run.glob("report/views_*.md")).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(TEACHER_CONFIG.format(out=tmp_path / "x", model=tiny_model_path, data=data)
                   .replace('base_arm = "baseline"', 'base_arm = "frozen"'))
    with pytest.raises(ExperimentError, match="base_arm 'frozen' must be an arm trained before it"):
        load_experiment(bad)
