"""Documents and metadata next to the vector index, in SQLite (no pickle).

The live store is an in-memory SQLite database: lookups by internal id for search results, a
UNIQUE constraint on the user id for duplicate detection, and JSON metadata. ``save`` copies it
to a file with SQLite's online backup; ``load`` copies a file back into memory, so a loaded
retriever never modifies the saved index in place (saving again is atomic, see the retriever).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    iid      INTEGER PRIMARY KEY,   -- the int64 id used in the vector index
    id       TEXT NOT NULL UNIQUE,  -- the caller's id
    text     TEXT NOT NULL,
    metadata TEXT,                  -- JSON object or NULL
    norm     REAL NOT NULL          -- L2 norm of the document embedding
);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DocumentStore:
    """Thread-safe (one lock around one connection) document table keyed by an int64 ``iid``."""

    def __init__(self, conn: sqlite3.Connection | None = None) -> None:
        self._conn = conn or sqlite3.connect(":memory:", check_same_thread=False)
        self._conn.executescript(_SCHEMA)
        with self._conn:  # commit: an open transaction here would block a later backup (save after load)
            self._conn.execute(
                "INSERT OR IGNORE INTO info(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        self._lock = threading.Lock()
        self._msn: tuple[float | None] | None = None  # cached mean squared norm (see mean_sq_norm)
        self._count: int | None = None
        self.version = 0  # bumped by every insert and delete: what a derived index (BM25) is current with

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        with self._lock:  # COUNT(*) scans the table: kept until the next write (a server asks per request)
            if self._count is None:
                self._count = int(self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
            return self._count

    def mean_sq_norm(self) -> float | None:
        """The mean squared norm of the stored documents' embeddings (None when empty): what relevance is
        scaled by.

        Computed once and kept until the next insert or delete (one pass over the table)."""
        with self._lock:
            if self._msn is None:
                (value,) = self._conn.execute("SELECT AVG(norm * norm) FROM documents").fetchone()
                self._msn = (None if value is None else float(value),)
            return self._msn[0]

    def existing_ids(self, ids: Sequence[str]) -> list[str]:
        """Which of ``ids`` are already stored."""
        found: list[str] = []
        with self._lock:
            for chunk in _chunks(list(ids), 500):
                q = f"SELECT id FROM documents WHERE id IN ({','.join('?' * len(chunk))})"
                found.extend(r[0] for r in self._conn.execute(q, chunk))
        return found

    def iids_for(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for chunk in _chunks(list(ids), 500):
                q = f"SELECT id, iid FROM documents WHERE id IN ({','.join('?' * len(chunk))})"
                out.update((r[0], int(r[1])) for r in self._conn.execute(q, chunk))
        return out

    def get_many(self, iids: Iterable[int]) -> dict[int, tuple[str, str, dict | None, float]]:
        """``iid -> (id, text, metadata, norm)`` for the iids that exist."""
        iids = [int(i) for i in iids]
        out: dict[int, tuple[str, str, dict | None, float]] = {}
        with self._lock:
            for chunk in _chunks(iids, 500):
                q = ("SELECT iid, id, text, metadata, norm FROM documents "
                     f"WHERE iid IN ({','.join('?' * len(chunk))})")
                for iid, did, text, meta, norm in self._conn.execute(q, chunk):
                    out[int(iid)] = (did, text, json.loads(meta) if meta is not None else None, float(norm))
        return out

    def get(self, doc_id: str) -> tuple[str, dict | None, float] | None:
        with self._lock:
            row = self._conn.execute("SELECT text, metadata, norm FROM documents WHERE id=?",
                                     (doc_id,)).fetchone()
        if row is None:
            return None
        return row[0], (json.loads(row[1]) if row[1] is not None else None), float(row[2])

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM documents ORDER BY iid")]

    def texts(self) -> tuple[list[int], list[str], int]:
        """Every stored (iid, text), in iid order, and the version they are of (one consistent read)."""
        with self._lock:
            rows = self._conn.execute("SELECT iid, text FROM documents ORDER BY iid").fetchall()
            return [int(r[0]) for r in rows], [r[1] for r in rows], self.version

    def get_info(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM info WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # ----------------------------------------------------------------- mutation
    def insert(self, iids: Sequence[int], ids: Sequence[str], texts: Sequence[str],
               metadata: Sequence[dict | None], norms: Sequence[float]) -> None:
        """Insert one batch in one transaction; a duplicate id rolls the whole batch back."""
        rows = []
        for iid, did, text, meta, norm in zip(iids, ids, texts, metadata, norms, strict=True):
            rows.append((int(iid), did, text, None if meta is None else json.dumps(meta, ensure_ascii=False),
                         float(norm)))
        with self._lock, self._conn:
            self._msn = self._count = None
            self.version += 1
            self._conn.executemany("INSERT INTO documents(iid, id, text, metadata, norm) VALUES (?,?,?,?,?)",
                                   rows)
            self._conn.execute(
                "INSERT INTO info(key, value) VALUES ('next_iid', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(max(iids) + 1),),
            )

    def delete(self, iids: Sequence[int]) -> int:
        n = 0
        with self._lock, self._conn:
            self._msn = self._count = None
            self.version += 1
            for chunk in _chunks([int(i) for i in iids], 500):
                cur = self._conn.execute(f"DELETE FROM documents WHERE iid IN ({','.join('?' * len(chunk))})",
                                         chunk)
                n += cur.rowcount
        return n

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Copy the database to ``path`` (a new file; the caller makes it atomic)."""
        dest = sqlite3.connect(str(path))
        try:
            with self._lock:
                self._conn.backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()

    @classmethod
    def load(cls, path: str | os.PathLike) -> DocumentStore:
        """Read ``path`` into memory; a damaged or foreign file raises ``ValueError`` naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: document store missing")
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        mem = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            src.backup(mem)
            ok = mem.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise ValueError(f"{path}: SQLite integrity check failed: {ok}")
            tables = {r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"documents", "info"} <= tables:
                raise ValueError(f"{path}: not a ragcun document store (tables: {sorted(tables)})")
            row = mem.execute("SELECT value FROM info WHERE key='schema_version'").fetchone()
            if row is None or int(row[0]) > SCHEMA_VERSION:
                raise ValueError(f"{path}: unsupported store schema version {row[0] if row else None}")
        except sqlite3.DatabaseError as exc:
            mem.close()
            raise ValueError(f"{path}: corrupt document store ({exc})") from exc
        except Exception:
            mem.close()
            raise
        finally:
            src.close()
        return cls(mem)

    def close(self) -> None:
        self._conn.close()


def _chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
