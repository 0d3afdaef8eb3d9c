"""LanceDB as the vector engine behind :class:`~ragcun.retrieval.GaussianRetriever` (``engine="lancedb"``).

Why LanceDB: it is embedded (no server) and keeps the vectors *on disk* in Lance files, searched through an
IVF-PQ index, so a corpus larger than memory is served from one process; the same code opens a table on
object storage or LanceDB Cloud given ``uri=``. The metric is ``l2`` everywhere and nothing normalises.
``index="flat"`` scans every vector (exact); ``index="ivf"`` builds IVF-PQ once the table holds
``min_rows`` vectors (below that it scans, which is exact) and re-ranks the ``refine_factor × k``
candidates on the full vectors, so the returned distances are true L2 distances. Rows added after the
index was built are searched by scan until they exceed a tenth of the indexed rows; then the index is
brought up to date (``optimize``).

Saving writes ``lancedb.json`` (table, version, parameters) and the table itself under ``lance/``; Lance
data files never change once written, so they are hard-linked, not copied, where the file system allows,
and every file is hash-checked by the manifest. A loaded index works on its own linked copy (beside the
saved one), so adding to it never alters the save. A table on a remote ``uri`` is referenced, not
copied, and refused on load when its row count changed since the save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragcun.files import pid_alive
from ragcun.retrieval.index import VectorIndex, as_ids, as_vectors, positive_int

TABLE = "vectors"
SAVED = "lance"
#: Lance files that are rewritten in place (never linked, never hashed: the version is checked instead).
_MUTABLE = ("latest_version_hint.json",)
_IMMUTABLE_DIRS = ("data", "_indices", "_deletions")


def _lancedb():
    # the Rust core's warnings (k-means on small tables, deprecations)
    os.environ.setdefault("LANCEDB_LOG", "error")
    try:
        import lancedb
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError("backend='lancedb' needs lancedb: pip install 'ragcun[lancedb]'") from exc
    return lancedb, pa


def _remote(uri: str | None) -> bool:
    return uri is not None and "://" in uri


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a Lance table folder, hard-linking the files Lance never rewrites."""
    for root, _, names in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in names:
            s, d = Path(root) / name, dst / rel / name
            if rel.parts and rel.parts[0] in _IMMUTABLE_DIRS:
                try:
                    os.link(s, d)
                    continue
                except OSError:
                    pass  # another file system, or links not allowed: copy
            shutil.copy2(s, d)


class LanceIndex(VectorIndex):
    """Vectors in a LanceDB table: exact scan (``flat``) or IVF-PQ with exact re-ranking (``ivf``)."""

    files: ClassVar[tuple[str, ...]] = ("lancedb.json",)

    def __init__(self, dim: int, exact: bool = True, uri: str | None = None, table: str = TABLE,
                 num_partitions: int | None = None, num_sub_vectors: int | None = None, nprobes: int = 32,
                 refine_factor: int = 10, min_rows: int = 10_000) -> None:
        super().__init__(dim)
        self.kind = "flat" if exact else "ivf"
        self.exact = bool(exact)
        def check(name: str, value: Any) -> int:
            return positive_int(f"backend='lancedb': {name}", value)

        self.nprobes = check("nprobes", nprobes)
        self.refine_factor = check("refine_factor", refine_factor)
        self.min_rows = check("min_rows", min_rows)
        self.num_partitions = None if num_partitions is None else check("num_partitions", num_partitions)
        self.num_sub_vectors = None if num_sub_vectors is None else check("num_sub_vectors", num_sub_vectors)
        if self.num_sub_vectors and dim % self.num_sub_vectors:
            raise ValueError(f"backend='lancedb': num_sub_vectors={num_sub_vectors} must divide "
                             f"the dimension {dim}")
        self.table_name = table
        self.uri = uri
        if uri is None:  # a private working folder, removed with the index
            uri = tempfile.mkdtemp(prefix=f".ragcun-lance-{os.getpid()}-")
            weakref.finalize(self, shutil.rmtree, uri, True)
        self._open(uri)
        self._indexed, self._pending = 0, len(self)

    def _open(self, uri: str) -> None:
        lancedb, pa = _lancedb()
        self._pa = pa
        self._db = lancedb.connect(uri)
        self._workdir = None if _remote(uri) else Path(uri)
        if self.table_name in self._db.table_names():
            self._table = self._db.open_table(self.table_name)
            size = self._table.schema.field("vector").type.list_size
            if size != self.dim:
                raise ValueError(f"LanceDB table {self.table_name!r} at {uri} holds {size}-d vectors, "
                                 f"this model makes {self.dim}-d ones")
        else:
            schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), self.dim))])
            self._table = self._db.create_table(self.table_name, schema=schema)

    @property
    def backend(self) -> str:
        return "lancedb"

    @property
    def params(self) -> dict[str, Any]:
        return {"uri": self.uri if _remote(self.uri) else None, "table": self.table_name,
                "num_partitions": self.num_partitions, "num_sub_vectors": self.num_sub_vectors,
                "nprobes": self.nprobes, "refine_factor": self.refine_factor, "min_rows": self.min_rows}

    @property
    def has_ann(self) -> bool:
        return bool(self._table.list_indices())

    def __len__(self) -> int:
        return int(self._table.count_rows())

    # ------------------------------------------------------------------ writes
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = as_vectors(vectors, self.dim)
        ids = as_ids(ids, x.shape[0])
        if not len(ids):
            return
        pa = self._pa
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), self.dim)
        self._table.add(pa.table({"id": pa.array(ids, pa.int64()), "vector": vec}))
        self._pending += len(ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        removed = 0
        for s in range(0, len(ids), 1000):
            where = f"id IN ({', '.join(str(int(i)) for i in ids[s:s + 1000])})"
            n = int(self._table.count_rows(where))
            if n:
                self._table.delete(where)
                removed += n
        return removed

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, in that order (every id must be present)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        got: dict[int, np.ndarray] = {}
        for s in range(0, len(ids), 1000):
            where = f"id IN ({', '.join(str(int(i)) for i in ids[s:s + 1000])})"
            res = self._table.search().where(where).select(["id", "vector"]).limit(None).to_arrow()
            vec = res["vector"].combine_chunks().flatten().to_numpy().reshape(-1, self.dim)
            got.update(zip(res["id"].to_numpy().tolist(), vec, strict=True))
        return np.asarray([got[int(i)] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    @property
    def needs_prepare(self) -> bool:
        if self.exact or self._pending == 0:
            return False
        if not self.has_ann:
            return len(self) >= self.min_rows
        return self._pending > 0.1 * max(self._indexed, 1)

    def prepare(self) -> None:
        """Build IVF-PQ (or fold newly added rows into it) when enough vectors are waiting."""
        if not self.needs_prepare:
            return
        n = len(self)
        if not self.has_ann:
            from lancedb.index import IvfPq

            parts = self.num_partitions or max(1, min(int(round(np.sqrt(n))), n // 256))
            subs = self.num_sub_vectors or next(s for s in (self.dim // 8, self.dim // 4, self.dim // 2, 1)
                                                if s >= 1 and self.dim % s == 0)
            self._table.create_index("vector", config=IvfPq(distance_type="l2", num_partitions=parts,
                                                            num_sub_vectors=subs))
            self.num_partitions, self.num_sub_vectors = parts, subs
        else:
            self._table.optimize()
        self._indexed, self._pending = n, 0

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim)
        out_d = np.full((q.shape[0], k), np.inf, np.float32)
        out_i = np.full((q.shape[0], k), -1, np.int64)
        if q.shape[0] == 0 or len(self) == 0:
            return out_d, out_i
        query = self._table.search(list(q) if q.shape[0] > 1 else q[0]).distance_type("l2").limit(k)
        if self.exact or not self.has_ann:
            query = query.bypass_vector_index()
        else:
            query = query.nprobes(self.nprobes).refine_factor(self.refine_factor)
        res = query.select(["id", "_distance"]).to_arrow()
        qi = (res["query_index"].to_numpy() if "query_index" in res.column_names
              else np.zeros(res.num_rows, np.int64))
        rid, dist = res["id"].to_numpy(), res["_distance"].to_numpy()
        order = np.lexsort((dist, qi))  # by query, then distance (Lance returns them so; be sure)
        slot = np.zeros(q.shape[0], np.int64)
        for j in order:
            r = qi[j]
            if slot[r] < k:
                out_d[r, slot[r]], out_i[r, slot[r]] = dist[j], rid[j]  # Lance's l2 is already squared
                slot[r] += 1
        return out_d, out_i

    # ------------------------------------------------------------------ save / load
    def _table_dir(self) -> Path:
        assert self._workdir is not None
        return self._workdir / f"{self.table_name}.lance"

    def save(self, directory: Path) -> None:
        info = {"exact": self.exact, "version": int(self._table.version), "rows": len(self),
                "indexed": self._indexed, **self.params}
        saved: list[str] = ["lancedb.json"]
        if self._workdir is not None:
            dst = directory / SAVED / f"{self.table_name}.lance"
            _link_tree(self._table_dir(), dst)
            saved += sorted(str(p.relative_to(directory)) for p in dst.rglob("*")
                            if p.is_file() and p.name not in _MUTABLE)
        (directory / "lancedb.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        self.files = tuple(saved)  # the manifest hashes every data file

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> LanceIndex:
        info = json.loads((directory / "lancedb.json").read_text(encoding="utf-8"))
        table = str(info.get("table", TABLE))
        knobs = {k: info.get(k) for k in ("num_partitions", "num_sub_vectors")}
        knobs.update({k: int(info[k]) for k in ("nprobes", "refine_factor", "min_rows")
                      if info.get(k) is not None})
        uri = info.get("uri")
        if uri:  # a remote table: it must still hold what was saved
            obj = cls(dim, exact=bool(info.get("exact", True)), uri=uri, table=table, **knobs)
            if len(obj) != int(info["rows"]):
                raise ValueError(f"LanceDB table {table!r} at {uri} holds {len(obj)} vectors, "
                                 f"the saved index {info['rows']}: it changed since {directory} was saved")
        else:
            src = directory / SAVED / f"{table}.lance"
            if not src.is_dir():
                raise ValueError(f"{src}: the saved LanceDB table is missing")
            _remove_stale_copies(directory.parent)
            _remove_stale_copies(Path(tempfile.gettempdir()))
            prefix = f".ragcun-lance-{os.getpid()}-"  # the owner's pid: a copy left by a killed process goes
            try:
                work = tempfile.mkdtemp(prefix=prefix, dir=directory.parent)
            except OSError:  # a read-only parent: work from the system's temporary folder
                work = tempfile.mkdtemp(prefix=prefix)
            _link_tree(src, Path(work) / f"{table}.lance")
            obj = cls(dim, exact=bool(info.get("exact", True)), uri=work, table=table, **knobs)
            obj.uri = None  # the working copy is private: removed with the index, never named in a manifest
            weakref.finalize(obj, shutil.rmtree, work, True)
            if obj._table.version != int(info["version"]):
                raise ValueError(f"{src}: table version {obj._table.version}, "
                                 f"the manifest's {info['version']}")
        obj._indexed = int(info.get("indexed", 0))
        obj._pending = max(0, len(obj) - obj._indexed)
        return obj


def _remove_stale_copies(folder: Path) -> None:
    """Remove the working copies (``.ragcun-lance-<pid>-*``) of processes that are no longer running: a server
    killed with ``kill -9`` cannot remove its own."""

    try:
        stale = list(folder.glob(".ragcun-lance-*-*"))
    except OSError:  # pragma: no cover - an unreadable folder: nothing to clean
        return
    for path in stale:
        pid = path.name.split("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
