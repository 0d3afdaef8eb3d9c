"""EncodeSettings: one object for the eight encoding settings, the same results as the keywords it replaces,
and a clear error when both are given."""

from __future__ import annotations

import pytest

from ragcun.encoding.settings import EncodeSettings


def test_settings_give_the_results_the_keywords_give(tiny_model_path, beir_slice):
    from ragcun.evaluation.beir_eval import evaluate_model
    from ragcun.evaluation.isotropy import analyze

    data = str(beir_slice("scifact", {"test": 6}, extra_docs=30, max_chars=300, name="scifact-settings"))
    kw = {"batch_size": 8, "max_seq_length": 32, "cache": False, "backend": "torch", "precision": "fp32"}
    by_kw = evaluate_model(tiny_model_path, data, score="l2", show_progress_bar=False, **kw)
    by_obj = evaluate_model(tiny_model_path, data, score="l2", show_progress_bar=False,
                            settings=EncodeSettings(**kw))
    assert by_kw["results"] == by_obj["results"] and by_obj["config"]["batch_size"] == 8
    assert by_obj["config"]["max_seq_length"] == 32
    iso = analyze([tiny_model_path], data, num_slices=16, plots=False, settings=EncodeSettings(**kw))
    assert iso["results"][0]["n"] > 0
    with pytest.raises(ValueError, match="as settings= or as keywords, not both"):
        evaluate_model(tiny_model_path, data, settings=EncodeSettings(), batch_size=4)


def test_evaluators_are_built_once_and_called_with_models(tiny_model_path, beir_slice):
    """BeirEvaluator / IsotropyEvaluator: the data and settings checked at construction (before any model
    loads), then called with models; evaluate_model and analyze are one call of them."""
    from ragcun.evaluation.beir_eval import BeirEvaluator, evaluate_model
    from ragcun.evaluation.isotropy import IsotropyEvaluator

    data = str(beir_slice("scifact", {"test": 6}, extra_docs=30, max_chars=300, name="scifact-settings"))
    settings = EncodeSettings(batch_size=8, max_seq_length=32, cache=False)
    ev = BeirEvaluator(data, "l2", settings=settings, show_progress_bar=False)
    once, twice = ev(tiny_model_path), ev(tiny_model_path, model_name="again")
    assert once["results"] == twice["results"] and twice["model"] == "again"
    assert once["results"] == evaluate_model(tiny_model_path, data, score="l2", settings=settings,
                                             show_progress_bar=False)["results"]
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        BeirEvaluator(data, top_k=0)
    with pytest.raises(FileNotFoundError):
        BeirEvaluator("no-such-dataset-here", settings=EncodeSettings(data_dir=data))
    iso = IsotropyEvaluator(data, settings=settings, num_slices=16)
    rows = iso(tiny_model_path, "tiny")
    assert ([r["kind"] for r in rows] == ["corpus", "queries"]
            and iso.corpus_embeddings["tiny"].shape[0] == rows[0]["n"])


def test_one_beir_evaluator_reads_each_dataset_once_and_ranks_by_the_score_each_call_names(
        tiny_model_path, beir_slice, monkeypatch, tmp_path):
    """An experiment builds one BeirEvaluator for every view: each dataset is read on the first call only
    (keep_data), a call may name its own score, and the results equal a fresh evaluate_model with that score;
    evaluate_model itself keeps nothing."""
    import ragcun.data.beir as beir
    from ragcun.evaluation.beir_eval import BeirEvaluator, evaluate_model

    data = str(beir_slice("scifact", {"test": 6}, extra_docs=30, max_chars=300, name="scifact-settings"))
    settings = EncodeSettings(batch_size=8, max_seq_length=32, cache=False)
    reads = []
    real = beir.load_beir
    monkeypatch.setattr(beir, "load_beir", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    ev = BeirEvaluator(data, settings=settings, show_progress_bar=False)
    by_l2 = ev(tiny_model_path, score="l2", run_file=tmp_path / "l2.run")
    by_cos, default = ev(tiny_model_path, score="cos", run_file=tmp_path / "cos.run"), ev(tiny_model_path)
    assert reads == [data]
    # plain ST model: cosine
    assert (by_l2["score"], by_cos["score"], default["score"]) == ("l2", "cos", "cos")
    for res, score in ((by_l2, "l2"), (by_cos, "cos")):
        assert res["results"] == evaluate_model(tiny_model_path, data, score=score, settings=settings,
                                                show_progress_bar=False)["results"]
    top = {s: float((tmp_path / f"{s}.run").read_text().split()[4]) for s in ("l2", "cos")}
    assert top["l2"] < 0 < top["cos"] <= 1  # each run scored by its own score: -||q - d|| and the cosine
    assert len(reads) == 3  # evaluate_model read its data for its one call, and kept it nowhere
    for bad in ("hamming", ""):  # an empty score is refused, not taken for the default
        with pytest.raises(ValueError, match="score must be one of"):
            ev(tiny_model_path, score=bad)
