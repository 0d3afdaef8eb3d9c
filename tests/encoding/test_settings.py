"""EncodeSettings: one object for the eight encoding settings, the same results as the keywords it replaces, and
a clear error when both are given."""

from __future__ import annotations

import pytest

from ragcun.encoding.settings import EncodeSettings


def test_settings_give_the_results_the_keywords_give(tiny_model_path, beir_slice):
    from ragcun.evaluation.beir_eval import evaluate_model
    from ragcun.evaluation.isotropy import analyze

    data = str(beir_slice("scifact", {"test": 6}, extra_docs=30, max_chars=300, name="scifact-settings"))
    kw = {"batch_size": 8, "max_seq_length": 32, "cache": False, "backend": "torch", "precision": "fp32"}
    by_kw = evaluate_model(tiny_model_path, data, score="l2", show_progress_bar=False, **kw)
    by_obj = evaluate_model(tiny_model_path, data, score="l2", show_progress_bar=False, settings=EncodeSettings(**kw))
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
    assert [r["kind"] for r in rows] == ["corpus", "queries"] and iso.corpus_embeddings["tiny"].shape[0] == rows[0]["n"]
