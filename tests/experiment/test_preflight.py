"""`ragcun preflight` on an experiment config: real slice, tiny model, every arm's real steps."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from ragcun.cli import app
from ragcun.experiment import load_experiment
from ragcun.experiment.preflight import run_experiment_preflight
from tests.experiment.test_experiment import CONFIG

runner = CliRunner()


def test_experiment_preflight_checks_sources_and_runs_every_arm(tmp_path, beir_slice, tiny_model_path):
    data = beir_slice("scifact", {"train": 12, "test": 8}, extra_docs=60, max_chars=400, name="scifact-mini")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run", model=tiny_model_path, data=data))
    results = {r.name: r for r in run_experiment_preflight(load_experiment(cfg))}
    assert {r.status for r in results.values()} <= {"pass", "warn"}, {n: r.detail for n, r in results.items()
                                                                       if r.status == "fail"}
    for arm in ("baseline", "isotropy", "frozen"):
        assert "2 steps at batch 4" in results[f"arm {arm}: 2 steps"].detail
    assert "validation queries" in results["triplets"].detail
    assert not (tmp_path / "run").exists()  # a preflight writes nothing where the run will go


def test_experiment_preflight_fails_fast_on_missing_data(tmp_path, tiny_model_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run", model=tiny_model_path, data="no-such-dataset")
                   .replace('datasets = ["no-such-dataset"]', 'datasets = ["scifact", "nope1", "nope2"]'))
    t = time.perf_counter()
    results = {r.name: r for r in run_experiment_preflight(load_experiment(cfg))}
    assert (results["triplet sources"].status == "fail"
            and "no-such-dataset" in results["triplet sources"].detail)
    assert "2 of 3 not found: nope1, nope2" in results["evaluation datasets"].detail
    assert results["model and training steps"].detail == "skipped: fix the failures above first"
    assert "triplets" not in results  # no model loaded, no triplets built
    assert time.perf_counter() - t < 30
    res = runner.invoke(app, ["preflight", str(cfg)])
    assert res.exit_code == 1 and "fail" in res.output and "Traceback" not in res.output


def test_demo_config_preflight_finds_its_data():
    exp = load_experiment("configs/demo.toml")
    from ragcun.experiment.preflight import check_eval_datasets, check_sources

    assert check_sources(exp)[0] == "pass" and check_eval_datasets(exp)[0] == "pass"
