"""Saving and loading a :class:`~ragcun.retrieval.GaussianRetriever`: the manifest, the atomic save, the
checked load.

A saved index is a folder: ``manifest.json`` (format, model name, location and fingerprint, index type
and parameters, counts, and the size and sha256 of every file), the index files, ``docs.sqlite`` and,
for a model that was never saved elsewhere, ``model/``. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcun.encoding.models import is_normalized, load_for_index, model_dimension, set_max_seq_length
from ragcun.files import atomic_path, recover, sha256_file
from ragcun.fingerprint import FINGERPRINT_METHOD, model_fingerprint
from ragcun.retrieval.engines import index_files, load_index
from ragcun.retrieval.errors import (
    DimensionMismatchError,
    IndexCorruptError,
    ModelMismatchError,
    RetrieverError,
)
from ragcun.retrieval.hnsw_index import HNSWIndex
from ragcun.retrieval.index import INDEX_TYPES
from ragcun.retrieval.store import DocumentStore

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STORE_FILE = "docs.sqlite"
MODEL_DIR = "model"
FORMAT = "ragcun-retriever"
FORMAT_VERSION = 3  # 3: the manifest carries a hash of its own content (``manifest_sha256``)
MANIFEST_HASH = "manifest_sha256"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest's content without its own hash field (canonical JSON: sorted keys)."""
    import hashlib

    body = {k: v for k, v in manifest.items() if k != MANIFEST_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


@dataclass
class Parts:
    """What a retriever is made of, as the folder saves and loads it: the retriever hands these over to save,
    and is built from them on load (this module never sees the retriever itself)."""

    model: Any
    model_name: str
    model_location: str | None
    index: Any
    store: DocumentStore
    batch_size: int
    runtime: Any = None  # the encoding runtime (None on load: the manifest's "encoding" says which)
    next_iid: int = 0
    fingerprint: str | None = None
    dimension: int | None = None
    encoding: dict[str, Any] | None = None  # on load: the manifest's saved runtime
    lexical: Any = None  # the BM25 index of hybrid search (saved when built or when ``hybrid`` is set)
    hybrid: Any = None  # the default fusion of hybrid search (a Fusion), or None
    calibration: list[str] | None = None  # OpenVINO int8's calibration sample (the same graph on load)


def build_manifest(parts: Parts) -> dict[str, Any]:
    import importlib.metadata as md

    try:
        version = md.version("ragcun")
    except md.PackageNotFoundError:  # pragma: no cover
        version = None
    counts = {"documents": len(parts.store), "vectors": len(parts.index), "next_iid": parts.next_iid}
    if isinstance(parts.index, HNSWIndex):
        counts["tombstones"] = parts.index.tombstones
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ragcun_version": version,
        "model": {
            "name": parts.model_name,
            "location": parts.model_location,
            "fingerprint": parts.fingerprint,
            "fingerprint_method": FINGERPRINT_METHOD,
            "normalized": is_normalized(parts.model),
            "max_seq_length": getattr(parts.model, "max_seq_length", None),
        },
        "batch_size": parts.batch_size,
        "encoding": {"backend": parts.runtime.backend, "precision": parts.runtime.precision,
                     **({"calibration": parts.calibration} if parts.calibration else {})},
        "dimension": parts.dimension,
        "metric": "l2",
        "index": {"type": parts.index.kind, "backend": parts.index.backend, "params": parts.index.params},
        "counts": counts,
    }


def save(parts: Parts, directory: str | os.PathLike, lock: Any) -> Path:
    """Write the index, documents and manifest to ``directory`` atomically.

    Files are written into a temporary sibling folder that then replaces ``directory`` in one
    atomic swap (:func:`ragcun.files.atomic_path`), so a crash mid-save leaves the previous index there.
    A model that was never saved (built in memory) is saved inside the index (``model/``), so a
    saved index always loads by itself.
    """
    directory = Path(directory)
    with lock.read(), atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        parts.index.save(tmp)
        parts.store.save(tmp / STORE_FILE)
        manifest = build_manifest(parts)
        if parts.model_location is None:
            parts.model.save(str(tmp / MODEL_DIR))
            manifest["model"]["location"] = None
            manifest["model"]["relative"] = MODEL_DIR
        elif Path(parts.model_location).exists():
            target = directory.resolve().parent
            manifest["model"]["relative"] = (
                os.path.relpath(Path(parts.model_location).resolve(), directory.resolve())
                if Path(parts.model_location).resolve().anchor == target.anchor else None)
        files = [*parts.index.files, STORE_FILE]
        if parts.lexical is not None and (parts.hybrid is not None or parts.lexical.bm25 is not None):
            files += parts.lexical.save(tmp, parts.store)
            manifest["hybrid"] = {"fusion": parts.hybrid.as_dict() if parts.hybrid is not None else None,
                                  "bm25": parts.lexical.params.as_dict()}
        manifest["files"] = {f: {"bytes": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)}
                             for f in files}
        manifest[MANIFEST_HASH] = manifest_digest(manifest)  # an edited manifest is refused on load
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    logger.info("saved %d documents (%s index) to %s", manifest["counts"]["documents"], parts.index.kind,
                directory)
    return directory


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a saved index, checked for format and completeness; errors name the file."""
    directory = Path(directory)
    recover(directory)  # a save killed between its two renames: put the kept index back
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such index directory")
    if not path.is_file():
        raise IndexCorruptError(f"{path} missing: {directory} is not a saved ragcun index "
                                "(or its save was interrupted)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path}: corrupt manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexCorruptError(f"{path}: not a ragcun retriever manifest (format="
                                f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise RetrieverError(f"{path}: format version {manifest['format_version']} is newer than this ragcun "
                             f"supports ({FORMAT_VERSION})")
    if int(manifest.get("format_version", 0)) >= 3:
        if manifest.get(MANIFEST_HASH) != manifest_digest(manifest):
            raise IndexCorruptError(f"{path}: its content does not match its own hash ({MANIFEST_HASH}): the "
                                    "manifest was edited or damaged; rebuild the index or restore the file")
    else:
        logger.warning("%s: written by an older ragcun (format %s): the manifest itself is not hash-checked; "
                       "saving the index again adds the check", path, manifest.get("format_version"))
    for key in ("model", "dimension", "index", "counts", "files"):
        if key not in manifest:
            raise IndexCorruptError(f"{path}: field {key!r} missing")
    kind = manifest["index"].get("type") if isinstance(manifest["index"], dict) else None
    if kind not in INDEX_TYPES:
        raise IndexCorruptError(f"{path}: index type {kind!r} is not one of {', '.join(INDEX_TYPES)}")
    backend = manifest["index"].get("backend", "faiss")
    needed = {*index_files(kind, backend), STORE_FILE}
    listed = set(manifest["files"]) if isinstance(manifest["files"], dict) else set()
    if not needed <= listed:
        raise IndexCorruptError(f"{path}: the manifest does not list {', '.join(sorted(needed - listed))}; "
                                "every file the index needs must be covered by its hashes")
    return manifest


def _model_source(directory: Path, mm: dict[str, Any]) -> str:
    """Where to load the index's model from: inside or relative to the index, its absolute path, its name."""
    for cand in (mm.get("relative"), mm.get("location")):
        if cand:
            p = (directory / cand) if not Path(cand).is_absolute() else Path(cand)
            if p.exists():
                return str(p.resolve())
    return str(mm.get("name"))


def load(
    directory: str | os.PathLike,
    model: Any = None,
    *,
    device: str | None = None,
    verify: bool = True,
    check_model: bool = True,
    mmap: bool = False,
) -> Parts:
    """Load a saved retriever.

    ``model=None`` reloads the model the manifest names: the copy saved inside the index, then the
    path relative to the index, then the absolute path, then the alias or Hub id. *Loading runs that
    model*: load indexes you trust. With ``verify`` every file's sha256 is checked (a missing,
    truncated or altered file raises :class:`IndexCorruptError`). With ``check_model`` a model whose
    fingerprint differs raises :class:`ModelMismatchError`, and any dimension disagreement raises
    :class:`DimensionMismatchError`. ``mmap`` maps a FAISS index read-only instead of reading it into
    memory (then the retriever must not be modified).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    for fname, info in manifest["files"].items():
        fpath = directory / fname
        if not fpath.is_file():
            raise IndexCorruptError(f"{fpath} missing (listed in {directory / MANIFEST})")
        size = fpath.stat().st_size
        if not isinstance(info, dict) or size != info.get("bytes"):
            raise IndexCorruptError(f"{fpath}: {size} bytes, the manifest says "
                                    f"{info.get('bytes') if isinstance(info, dict) else None} "
                                    "(truncated or altered)")
        if verify and sha256_file(fpath) != info.get("sha256"):
            raise IndexCorruptError(f"{fpath}: sha256 does not match the manifest (file altered or corrupt)")
    mm = manifest["model"]
    dim = int(manifest["dimension"])
    if model is None:
        source = _model_source(directory, mm)
        try:
            loaded, _, _ = load_for_index(source, device)
        except Exception as exc:  # noqa: BLE001 - any load failure gets the same clear message
            raise RetrieverError(
                f"could not load the index's model {mm.get('name')!r} from {source} ({exc}); "
                "pass model=... to load()"
            ) from None
        name, location = mm.get("name"), (source if Path(source).exists() else mm.get("location"))
        if mm.get("relative") == MODEL_DIR:
            location = None  # carried inside the index: a later save carries it again
    else:
        loaded, name, location = load_for_index(model, device)
        if not isinstance(model, str | os.PathLike):
            name, location = mm.get("name"), mm.get("location")
    seq = mm.get("max_seq_length")
    if model is None and isinstance(seq, int) and getattr(loaded, "max_seq_length", seq) != seq:
        # the truncation the index was built with (part of the fingerprint), through the one checked setter
        set_max_seq_length(loaded, seq, str(name))
    model_dim = model_dimension(loaded)
    if model_dim != dim:
        raise DimensionMismatchError(f"{directory}: index dimension {dim} but the model {name!r} "
                                     f"produces {model_dim}")
    if check_model and mm.get("fingerprint_method") != FINGERPRINT_METHOD:
        raise ModelMismatchError(
            f"{directory} was saved by an older ragcun (model fingerprint {mm.get('fingerprint_method')!r}, "
            f"now {FINGERPRINT_METHOD!r}): rebuild it, or pass check_model=False if you are sure the model "
            "is the same")
    ix = manifest["index"]
    try:
        index = load_index(directory, ix["type"], ix.get("backend", "faiss"), dim, ix.get("params") or {},
                           mmap=mmap)
        store = DocumentStore.load(directory / STORE_FILE)
    except (ValueError, RuntimeError) as exc:
        raise IndexCorruptError(str(exc)) from exc
    counts = manifest["counts"]
    next_id = int(store.get_info("next_iid") or counts.get("next_iid", 0))
    fingerprint = mm.get("fingerprint")
    if check_model:
        given = model_fingerprint(loaded)
        if given != fingerprint:
            raise ModelMismatchError(
                f"{directory} was built with model {mm.get('name')!r} (fingerprint "
                f"{str(fingerprint)[:12]}…), but the given model's fingerprint is {given[:12]}…. "
                "Search with the model that built the index (or pass check_model=False if you are sure)."
            )
    n_docs, n_vec = len(store), len(index)
    if n_docs != counts.get("documents") or n_vec != counts.get("vectors") or n_docs != n_vec:
        raise IndexCorruptError(
            f"{directory}: counts disagree (manifest: {counts.get('documents')} documents / "
            f"{counts.get('vectors')} vectors; files: {n_docs} documents / {n_vec} vectors)"
        )
    lexical, fusion = _hybrid(directory, manifest, store)
    logger.info("loaded %d documents (%s index) from %s", n_docs, index.kind, directory)
    # before runtimes: torch fp32
    saved = manifest.get("encoding") or {"backend": "torch", "precision": "fp32"}
    sample = saved.get("calibration") if isinstance(saved, dict) else None
    if sample is not None and not (isinstance(sample, list) and sample and all(
            isinstance(t, str) and t.strip() for t in sample)):
        raise IndexCorruptError(f"{directory / MANIFEST}: encoding.calibration must be a list of non-blank "
                                "texts (OpenVINO int8's calibration sample)")
    return Parts(loaded, name, location, index, store, int(manifest.get("batch_size", 64)), next_iid=next_id,
                 fingerprint=fingerprint, dimension=dim, encoding=saved, lexical=lexical, hybrid=fusion)


def _hybrid(directory: Path, manifest: dict[str, Any], store: DocumentStore) -> tuple[Any, Any]:
    """The saved BM25 index and default fusion of hybrid search (None, None when the index has none)."""
    from ragcun.encoding.fusion import Fusion
    from ragcun.retrieval.hybrid import BM25_DIR, LexicalIndex

    spec = manifest.get("hybrid")
    if spec is None:
        return None, None
    path = directory / MANIFEST
    if not isinstance(spec, dict) or not any(f.startswith(BM25_DIR + "/") for f in manifest["files"]):
        raise IndexCorruptError(f"{path}: field 'hybrid' names no BM25 files covered by the hashes")
    try:
        fusion = Fusion(**spec["fusion"]) if spec.get("fusion") is not None else None
    except (TypeError, ValueError) as exc:
        raise IndexCorruptError(f"{path}: field 'hybrid.fusion': {exc}") from None
    return LexicalIndex.load(directory, store), fusion
