"""A served index that takes writes and keeps them: a write-ahead log replayed on start, atomic snapshots.

Why a log of ragcun's own: whatever engine holds the vectors (FAISS in process, or an embedded Qdrant or
LanceDB working copy), the documents' texts and metadata live in ragcun's document store, which a saved
index snapshots (:meth:`GaussianRetriever.save`). An acknowledged write must survive ``kill -9`` before the
next snapshot, so every write is appended to ``<index>.wal.jsonl`` (its vectors included, so a replay does
not re-encode) and fsynced *before* it is applied and acknowledged. On start the log is replayed over the
last snapshot; every ``snapshot_every`` writes, and at a clean shutdown, the index is saved atomically and the
log emptied. Replaying is idempotent (upserts and deletes), so a crash between the snapshot and the log's
truncation loses nothing and duplicates nothing. A torn last line (a write cut off mid-append, never
acknowledged) is dropped with a warning; any other bad line stops the start, naming the file and line.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

WAL_SUFFIX = ".wal.jsonl"


def wal_path(index_dir: str | os.PathLike) -> Path:
    """Where the log of ``index_dir`` lives: beside it (a snapshot replaces the folder atomically)."""
    p = Path(index_dir)
    return p.with_name(p.name + WAL_SUFFIX)


class LiveIndex:
    """A loaded :class:`~ragcun.retrieval.GaussianRetriever` plus its write-ahead log and snapshot folder.

    Args:
        retriever: the index, loaded from ``directory``.
        directory: its saved folder (snapshots replace it atomically); None serves it read-only.
        snapshot_every: writes between snapshots.
    """

    def __init__(self, retriever: Any, directory: str | os.PathLike | None,
                 snapshot_every: int = 1000) -> None:
        if isinstance(snapshot_every, bool) or int(snapshot_every) < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every!r}")
        self.retriever = retriever
        self.directory = None if directory is None else Path(directory)
        self.snapshot_every = int(snapshot_every)
        self.wal = None if self.directory is None else wal_path(self.directory)
        self._lock = threading.Lock()  # one write (log + apply) or snapshot at a time
        self._since_snapshot = 0
        self.replayed = self._replay() if self.wal is not None and self.wal.exists() else 0

    @property
    def writable(self) -> bool:
        return self.directory is not None

    # ------------------------------------------------------------------ writes
    def upsert(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict | None] | None) -> int:
        """Encode, log, apply: ``ids`` replace what they named. Returns how many documents were written."""
        self._check_writable()
        r = self.retriever
        # add_documents' own checks before anything is encoded or logged (a refused write leaves no trace)
        texts, checked, meta = r.check_documents(texts, [str(i) for i in ids], metadata, upsert=True)
        ids = [str(i) for i in checked or []]
        meta = meta if meta is not None else [None] * len(ids)
        vectors = r.encode_documents(texts)
        record = {"op": "upsert", "ids": ids, "texts": texts, "metadata": meta, "dim": int(vectors.shape[1]),
                  "vectors": base64.b64encode(np.ascontiguousarray(vectors, np.float32).tobytes()).decode()}
        with self._lock:
            self._append(record)
            r.add_embeddings(vectors, texts, ids=ids, metadata=meta, upsert=True)
            self._wrote()
        return len(ids)

    def delete(self, ids: Sequence[str]) -> int:
        """Log and remove ``ids``; unknown ids are skipped. Returns how many were removed."""
        self._check_writable()
        ids = [str(i) for i in ids]
        with self._lock:
            self._append({"op": "delete", "ids": ids})
            n = self.retriever.remove(ids, missing="ignore")
            self._wrote()
        return n

    def snapshot(self) -> None:
        """Save the index atomically over its folder, then empty the log."""
        if self.directory is None:
            return
        with self._lock:
            self._snapshot()

    # ------------------------------------------------------------------ internals
    def _check_writable(self) -> None:
        if self.directory is None:
            raise PermissionError("this index is served read-only (--read-only)")

    def _append(self, record: dict[str, Any]) -> None:
        assert self.wal is not None
        line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        with open(self.wal, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _wrote(self) -> None:
        self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every:
            self._snapshot()

    def _snapshot(self) -> None:
        assert self.directory is not None and self.wal is not None
        self.retriever.save(self.directory)
        if self.wal.exists():
            with open(self.wal, "w", encoding="utf-8") as fh:
                fh.flush()
                os.fsync(fh.fileno())
        self._since_snapshot = 0
        logger.info("snapshot of %s saved; log emptied", self.directory.name)

    def _replay(self) -> int:
        assert self.wal is not None
        text = self.wal.read_text(encoding="utf-8")
        lines = text.split("\n")
        torn = lines[-1] if lines[-1] else None  # no final newline: the last append was cut off
        applied = 0
        for n, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.wal}:{n}: unreadable log entry ({exc})") from None
            applied += 1
        if torn is not None:
            logger.warning("%s:%d: dropped a torn last write (never acknowledged)", self.wal, len(lines))
            with open(self.wal, "w", encoding="utf-8") as fh:  # keep only what was whole
                fh.write("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""))
                fh.flush()
                os.fsync(fh.fileno())
        self._since_snapshot = applied
        if applied:
            logger.info("replayed %d logged writes over %s", applied, self.directory)
        return applied

    def _apply(self, rec: dict[str, Any]) -> None:
        r = self.retriever
        if rec["op"] == "delete":
            r.remove([str(i) for i in rec["ids"]], missing="ignore")
        elif rec["op"] == "upsert":
            dim = int(rec["dim"])
            x = np.frombuffer(base64.b64decode(rec["vectors"]), np.float32).reshape(-1, dim)
            r.add_embeddings(x, rec["texts"], ids=rec["ids"], metadata=rec["metadata"], upsert=True)
        else:
            raise ValueError(f"unknown op {rec['op']!r}")
