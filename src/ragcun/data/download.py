"""Downloads: BEIR datasets from the official BEIR server and the MS MARCO passage files.

Every download streams to a ``.part`` file while hashing it, checks the published MD5, and is
unpacked into a temporary sibling folder that replaces the destination in one rename, so a
failure or Ctrl-C never leaves a half-written dataset behind. What is already there is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ragcun.data.beir import BEIR_DATASETS, expand_dataset_names
from ragcun.files import MAX_EXTRACT_BYTES, atomic_path, safe_extract
from ragcun.paths import beir_candidates, data_dir
from ragcun.progress import wanted

logger = logging.getLogger(__name__)

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
BEIR_URL_ENV = "RAGCUN_BEIR_URL"  # a mirror (http(s):// or file://) that serves <name>.zip

# Published MD5 of each official zip: beir-cellar/beir, examples/dataset/md5.csv.
BEIR_MD5: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "6e29ac6c57e2d227fb57501872cac45f",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "88591ef8eb2913126d0c93ecbde6285f",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
    "germanquad": "e7dedd97c26128a31493ef3e5fe2becf",
}

# BEIR datasets the BEIR server does not host (licensing): they must be built by the user.
RESTRICTED = {
    "bioasq": "http://participants-area.bioasq.org/ (registration), then beir-cellar/beir's bioasq script",
    "signal1m": "https://research.signal-ai.com/datasets/signal1m.html (licence), then BEIR's conversion",
    "trec-news": "https://trec.nist.gov/data/news2018.html (Washington Post licence), then BEIR's conversion",
    "robust04": "https://trec.nist.gov/data/robust/04.guidelines.html (TREC disks 4+5), "
                "then BEIR's conversion",
}

MSMARCO_BASE_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking"
MSMARCO_URL_ENV = "RAGCUN_MSMARCO_URL"
# collection.tsv, queries.{train,dev,eval}.tsv, qrels.{train,dev}.tsv (+ the dev/eval small files).
# Microsoft publishes no checksum for this archive; we record its SHA-256 in a .sha256 file instead.
MSMARCO_ARCHIVE = "collectionandqueries.tar.gz"
#: the archive's MD5 as Anserini's MS MARCO passage guide gives it (Microsoft publishes none)
MSMARCO_MD5 = "31644046b18952c1386cd4564ba2ae69"
MSMARCO_FILES = ("collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.tsv", "qrels.dev.tsv")

CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed (offline, HTTP error, checksum mismatch, truncated transfer)."""


def beir_url(name: str, base_url: str | None = None) -> str:
    base = base_url or os.environ.get(BEIR_URL_ENV) or BEIR_BASE_URL
    return f"{base.rstrip('/')}/{name}.zip"


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    desc: str | None = None,
) -> Path:
    """Stream ``url`` to ``dest`` via ``dest.part``; verify size and MD5; rename only when complete.

    Returns ``dest``. Raises :class:`DownloadError` (the ``.part`` file is removed) on any failure,
    and removes it on Ctrl-C too.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    received = 0
    ok = False
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http/https/file by design)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"cannot reach {url} ({reason})") from None
        with resp, open(part, "wb") as fh:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc or dest.name, disable=not wanted(progress), leave=False,
            )
            with bar:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except Exception as exc:  # http.client.IncompleteRead, socket errors, timeouts
                        raise DownloadError(f"{url}: transfer interrupted after {received} bytes "
                                            f"({exc!r})") from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    digest.update(chunk)
                    sha.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and received != total:
            raise DownloadError(f"{url}: transfer interrupted: got {received} of {total} bytes")
        got = digest.hexdigest()
        if md5 and got.lower() != md5.lower():
            raise DownloadError(f"{url}: MD5 mismatch (expected {md5}, got {got}); the file was discarded")
        os.replace(part, dest)
        dest.with_name(dest.name + ".sha256").write_text(f"{sha.hexdigest()}  {dest.name}\n")
        ok = True
        logger.info("downloaded %s (%d bytes, md5 %s)", url, received, got)
        return dest
    finally:
        if not ok:
            part.unlink(missing_ok=True)


def _find_local(name: str, dest: Path, data_dir_: str | os.PathLike | None = None) -> Path | None:
    """An existing copy of dataset ``name`` in ``dest`` or in the data directory."""
    for cand in [dest / name, *beir_candidates(name, data_dir_)]:
        if (cand / "corpus.jsonl").exists():
            return cand
        if name == "cqadupstack" and cand.is_dir() and any(cand.glob("*/corpus.jsonl")):
            return cand
    return None


def _safe_extract_zip(zip_path: Path, into: Path) -> None:
    """Extract a zip with :func:`ragcun.files.safe_extract` (no member outside ``into``, no zip bomb)."""
    with zipfile.ZipFile(zip_path) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise DownloadError(f"{zip_path}: corrupt member {bad}")
        try:
            safe_extract(zf, into)
        except ValueError as exc:
            raise DownloadError(str(exc)) from None


def install_beir_zip(zip_path: str | os.PathLike, name: str, dest: str | os.PathLike) -> Path:
    """Unzip an official BEIR zip (top folder ``<name>/``) into ``dest/<name>`` atomically."""
    zip_path, dest = Path(zip_path), Path(dest)
    final = dest / name
    with atomic_path(final) as tmp:
        staging = tmp.with_name("extract")
        _safe_extract_zip(zip_path, staging)
        inner = staging / name
        if not inner.is_dir():  # a zip without the top folder
            inner = staging
        if not (inner / "corpus.jsonl").exists() and not any(inner.glob("*/corpus.jsonl")):
            raise DownloadError(f"{zip_path}: no corpus.jsonl inside; not a BEIR dataset archive")
        os.replace(inner, tmp)
    return final


def download_beir(
    names: Iterable[str],
    dest: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    force: bool = False,
    keep_zip: bool = False,
    timeout: float = 30.0,
    progress: bool = True,
    data_dir_: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Download and unpack BEIR datasets (names or groups) into ``dest`` (default ``<data_dir>/beir``).

    Skips datasets already present (in ``dest`` or the data directory) unless ``force``. Restricted
    datasets (not hosted by BEIR) are skipped with a warning saying how to obtain them.
    Returns name -> dataset folder for every dataset now available.
    """
    dest = Path(dest) if dest else data_dir(data_dir_) / "beir"
    out: dict[str, Path] = {}
    wanted = expand_dataset_names(names)
    unknown = [n for n in wanted if n not in RESTRICTED and n not in BEIR_MD5]
    if unknown:
        known = ", ".join(sorted([*BEIR_MD5, *RESTRICTED]))
        raise ValueError(f"unknown BEIR dataset(s) {unknown}; known: {known}; groups: quick, standard, all")
    for name in wanted:
        if name in RESTRICTED:
            local = _find_local(name, dest, data_dir_)
            if local:
                out[name] = local
            else:
                logger.warning("%s is not hosted by BEIR (licence); obtain it from %s", name,
                               RESTRICTED[name])
            continue
        if not force:
            local = _find_local(name, dest, data_dir_)
            if local:
                logger.info("%s already present at %s (skipped)", name, local)
                out[name] = local
                continue
        url = beir_url(name, base_url)
        dl_dir = dest / ".downloads"
        zip_path = dl_dir / f"{name}.zip"
        try:
            download_file(url, zip_path, md5=BEIR_MD5[name], timeout=timeout, progress=progress, desc=name)
        except DownloadError as exc:
            if dl_dir.is_dir() and not any(dl_dir.iterdir()):
                dl_dir.rmdir()
            looked = ", ".join(str(c) for c in [dest / name, *beir_candidates(name, data_dir_)])
            raise DownloadError(
                f"{exc}. ragcun looks for local copies in: {looked}. Put the unzipped dataset there "
                f"(set --data-dir or $RAGCUN_DATA_DIR), or point ${BEIR_URL_ENV} at a mirror."
            ) from None
        try:
            out[name] = install_beir_zip(zip_path, name, dest)
        finally:
            if not keep_zip:
                zip_path.unlink(missing_ok=True)
                zip_path.with_name(zip_path.name + ".sha256").unlink(missing_ok=True)
                if dl_dir.is_dir() and not any(dl_dir.iterdir()):
                    dl_dir.rmdir()
        logger.info("%s ready at %s", name, out[name])
    return out


def safe_extract_tar(tf: tarfile.TarFile, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> None:
    """Extract ``tf`` with tarfile's ``data`` filter (no absolute paths, ``..``, links out, devices) after
    checking that its members unpack to at most ``max_bytes`` (a tar bomb is refused before anything is
    written)."""
    total = 0
    for member in tf:
        total += member.size
        if total > max_bytes:
            raise DownloadError(f"{tf.name}: unpacks to more than {max_bytes >> 30} GB; refusing "
                                "(a tar bomb?)")
    tf.extractall(dest, filter="data")


def download_msmarco(
    dest: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch the official MS MARCO passage files (collection, train/dev queries and qrels) into ``dest``.

    Default ``<data_dir>/msmarco/passage``. Unpacked atomically; skipped when the files are there.
    """
    dest = Path(dest) if dest else data_dir() / "msmarco" / "passage"
    if not force and all((dest / f).exists() for f in MSMARCO_FILES):
        logger.info("MS MARCO passage files already present at %s (skipped)", dest)
        return dest
    base = base_url or os.environ.get(MSMARCO_URL_ENV) or MSMARCO_BASE_URL
    url = f"{base.rstrip('/')}/{MSMARCO_ARCHIVE}"
    archive = dest.parent / ".downloads" / MSMARCO_ARCHIVE
    try:
        download_file(url, archive, md5=MSMARCO_MD5, timeout=timeout, progress=progress, desc="msmarco")
    except DownloadError as exc:
        raise DownloadError(
            f"{exc}. Put collection.tsv, queries.train.tsv, qrels.train.tsv (and the dev files) in {dest}, "
            f"or point ${MSMARCO_URL_ENV} at a mirror."
        ) from None
    try:
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            with tarfile.open(archive, "r:gz") as tf:
                safe_extract_tar(tf, tmp)
            missing = [f for f in MSMARCO_FILES if not (tmp / f).exists()]
            if missing:
                raise DownloadError(f"{archive}: missing {missing}; not the MS MARCO passage archive")
    finally:
        shutil.rmtree(archive.parent, ignore_errors=True)
    return dest


__all__ = [
    "BEIR_BASE_URL",
    "BEIR_DATASETS",
    "BEIR_MD5",
    "DownloadError",
    "RESTRICTED",
    "download_beir",
    "download_file",
    "download_msmarco",
    "install_beir_zip",
]
