"""Where ragcun finds data, caches and models.

One rule everywhere, so the CLI, the Python API and the Makefile agree:
an explicit argument wins, then an environment variable, then a default.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "RAGCUN_DATA_DIR"
CACHE_DIR_ENV = "RAGCUN_CACHE_DIR"


#: Where a shared checkout keeps its data beside the project (the Makefile looks there first too).
SHARED_DATA = Path("..") / "shared" / "data"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: ``explicit``, else ``$RAGCUN_DATA_DIR``, else ``../shared/data`` when that folder
    exists (as the Makefile finds it), else ``./data``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return SHARED_DATA if SHARED_DATA.is_dir() else Path("data")


def cache_dir(sub: str | None = None) -> Path:
    """ragcun's cache (assembled models, embeddings, BM25 indexes).

    ``$RAGCUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ragcun``, else ``~/.cache/ragcun``.
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "ragcun"
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def missing(path: str | os.PathLike, what: str = "file") -> FileNotFoundError:
    """The error for a path that cannot be opened, saying what is true: a symbolic-link loop, a link to
    nothing, or no such file."""
    path = Path(path)
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a loop so
            return FileNotFoundError(f"{what} {path}: a symbolic-link loop")
        except OSError as exc:
            if getattr(exc, "errno", None) == 40:  # ELOOP
                return FileNotFoundError(f"{what} {path}: a symbolic-link loop")
            return FileNotFoundError(f"{what} {path}: a symbolic link to {os.readlink(path)}, which does not "
                                     "exist")
    return FileNotFoundError(f"{what} not found: {path}")


def dataset_file(folder: str | os.PathLike, name: str) -> Path:
    """A dataset's file ``name`` (``corpus.jsonl``), or its gzipped form when only that is there: every reader
    takes both, so every command finds both."""
    plain = Path(folder) / name
    gz = plain.with_name(name + ".gz")
    return gz if not plain.is_file() and gz.is_file() else plain


def beir_candidates(name: str, explicit: str | os.PathLike | None = None) -> list[Path]:
    """Places a BEIR dataset ``name`` may live under the data directory, in lookup order."""
    root = data_dir(explicit)
    return [root / "beir" / name, root / name]


def find_beir_dataset(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """Return the folder of BEIR dataset ``name`` (a path to a folder is accepted as is)."""
    direct = Path(name).expanduser()
    if direct.is_dir() and dataset_file(direct, "corpus.jsonl").is_file():
        return direct
    candidates = beir_candidates(name, explicit)
    for cand in candidates:
        if dataset_file(cand, "corpus.jsonl").is_file():
            return cand
    looked = ", ".join(str(c) for c in candidates)
    hint = _did_you_mean(name, explicit)
    raise FileNotFoundError(
        f"BEIR dataset {name!r} not found{hint} (looked in: {looked}). "
        f"Set --data-dir or ${DATA_DIR_ENV}, or run `ragcun data download {name}`."
    )


def documents_source(docs: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path:
    """What ``--docs`` names: an existing file or folder as it is, else a BEIR dataset by name in the data
    directory (``scifact``: its folder, so its corpus). One line when neither is there."""
    if not str(docs).strip():
        raise ValueError("is empty: give a dataset name, a folder or a document file")
    path = Path(docs).expanduser()
    if path.exists():
        return path
    if path.is_symlink():  # a loop, or a link to nothing: say so
        raise missing(path, "documents")
    if os.sep in str(docs) or "." in path.name:  # a path that is not there, not a dataset name
        raise FileNotFoundError(f"{docs}: no such file or folder")
    try:
        return find_beir_dataset(str(docs), explicit)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{docs}: no such file or folder; as a dataset name: {exc}") from None


def _did_you_mean(name: str, explicit: str | os.PathLike | None = None) -> str:
    """`` (did you mean 'scifact'?)`` for a near miss among the datasets in the data directory."""
    import difflib

    root = data_dir(explicit)
    present = [p.name for base in (root / "beir", root) if base.is_dir() for p in base.iterdir()
               if dataset_file(p, "corpus.jsonl").is_file()]
    close = difflib.get_close_matches(name, present, n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""
