"""MTEB (the real package, a local BEIR slice, no Hub) scores a saved ragcun model as ragcun does,
under the model's own name, so two arms never overwrite each other's results."""

from __future__ import annotations

import pytest

pytest.importorskip("mteb")

import mteb  # noqa: E402

from ragcun.evaluation.beir_eval import evaluate_model  # noqa: E402
from ragcun.integrations.mteb import beir_task, get_model  # noqa: E402
from ragcun.modeling.card import describe_model  # noqa: E402
from ragcun.training import load_config  # noqa: E402
from ragcun.training.config import run_record  # noqa: E402


@pytest.fixture(scope="module")
def arm_dirs(gaussian_minilm, tmp_path_factory):
    """The warm-started Gaussian MiniLM saved as two arms of one experiment."""
    root = tmp_path_factory.mktemp("mteb-arms")
    out = {}
    for arm in ("isotropy", "frozen"):
        cfg = load_config(None, ["base_model=all-MiniLM-L6-v2", f"run_name=demo/{arm}", "max_seq_length=128"])
        describe_model(gaussian_minilm, run_record(cfg, train_examples=10))
        gaussian_minilm.save(str(root / arm / "best"))
        out[arm] = root / arm / "best"
    return out


def test_mteb_scores_a_ragcun_model_as_ragcun_does(arm_dirs, beir_slice, tmp_path):
    data = beir_slice("scifact", {"test": 20}, extra_docs=100, max_chars=400, name="scifact-mteb")
    model = get_model(str(arm_dirs["isotropy"]))
    meta = model.mteb_model_meta
    assert meta.name == "ragcun/demo-isotropy" and len(meta.revision) == 16
    n = sum(p.numel() for p in model.model.parameters())
    assert (meta.n_parameters, meta.license, meta.open_weights) == (n, "apache-2.0", True)
    assert meta.adapted_from == "sentence-transformers/all-MiniLM-L6-v2"
    assert str(meta.similarity_fn_name).lower().endswith("euclidean")
    cache = mteb.ResultCache(tmp_path / "mteb")
    res = mteb.evaluate(model, beir_task(data), cache=cache, encode_kwargs={"batch_size": 32},
                        show_progress_bar=False)
    mteb_ndcg = res.task_results[0].scores["test"][0]["ndcg_at_10"]
    ours = evaluate_model(str(arm_dirs["isotropy"]), str(data), score="l2", max_seq_length=128,
                          show_progress_bar=False)["results"][data.name]["ndcg@10"]
    assert mteb_ndcg == pytest.approx(ours, abs=1e-5)  # MTEB rounds to five decimals

    mteb.evaluate(get_model(str(arm_dirs["frozen"])), beir_task(data), cache=cache,
                  encode_kwargs={"batch_size": 32}, show_progress_bar=False)
    folders = {p.name for p in (tmp_path / "mteb" / "results").iterdir()}
    assert ({"ragcun__demo-isotropy", "ragcun__demo-frozen"} <= folders
            and "no_model_name__available" not in folders)


def test_local_task_refuses_a_missing_split(beir_slice):
    data = beir_slice("scifact", {"test": 20}, extra_docs=100, max_chars=400, name="scifact-mteb")
    with pytest.raises(FileNotFoundError, match="no qrels for split 'dev'"):
        beir_task(data, split="dev")
