"""Progress while encoding: a log line every few seconds *within* a chunk (counted from the model's batches),
not one silent step per chunk; nothing at all when progress is off."""

from __future__ import annotations

import logging

import numpy as np

from ragcun.encoding.corpus import encode_corpus, encode_texts
from ragcun.progress import DocProgress


def test_tracked_encode_counts_every_batch_and_changes_nothing(tiny_model_path, caplog):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    texts = [f"passage {i} " * (1 + i % 5) for i in range(100)]
    log = logging.getLogger("ragcun.test")
    with caplog.at_level(logging.INFO, logger="ragcun.test"):
        with DocProgress(100, "encoding", every_s=0.0, logger=log) as progress, progress.track(model):
            got = encode_texts(model, texts, "document", batch_size=16)
    lines = [r.getMessage() for r in caplog.records if r.name == "ragcun.test"]
    assert (len(lines) == 7 and lines[0].startswith("encoding: 16 / 100 documents")
            and "100 / 100" in lines[-1])
    assert np.array_equal(got, encode_texts(model, texts, "document", batch_size=16))  # the hook only counts
    assert not any(h for h in model[0]._forward_hooks.values())  # and is removed afterwards


def test_one_chunk_corpus_reports_inside_the_chunk(tiny_model_path, caplog, monkeypatch):
    from sentence_transformers import SentenceTransformer

    import ragcun.progress as progress_mod

    model = SentenceTransformer(tiny_model_path, device="cpu")
    texts = [f"document {i}" for i in range(64)]
    real = progress_mod.DocProgress.__init__
    monkeypatch.setattr(progress_mod.DocProgress, "__init__",
                        lambda self, *a, **k: real(self, *a, **{**k, "every_s": 0.0}))
    with caplog.at_level(logging.INFO, logger="ragcun.encoding.corpus"):
        emb = encode_corpus(model, [str(i) for i in range(64)], texts, "one-chunk", batch_size=8, cache=False)
    lines = [r.getMessage() for r in caplog.records if "documents (" in r.getMessage()]
    assert emb.encoded_chunks == 1 and len(lines) == 8  # one chunk, a line per batch here
    emb.cleanup()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ragcun.encoding.corpus"):
        encode_corpus(model, [str(i) for i in range(64)], texts, "quiet", batch_size=8, cache=False,
                      show_progress_bar=False).cleanup()
    assert not [r for r in caplog.records if "documents (" in r.getMessage()]
