"""BEIR download path against a local HTTP server: MD5 check, atomic unzip, interrupted transfer, offline."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from ragcun.data import download as dl
from ragcun.data.beir import load_beir


def _make_zip(path: Path, name: str = "scifact") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/corpus.jsonl", '{"_id": "d1", "title": "T", "text": "hello world"}\n')
        zf.writestr(f"{name}/queries.jsonl", '{"_id": "q1", "text": "hello"}\n')
        zf.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        name = self.path.strip("/")
        if name in self.truncate:  # announce the full length, send half, hang up
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    _Handler.truncate = set()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_download_verify_unzip_and_skip(server, tmp_path, monkeypatch, data_root):
    root, url = server
    z = _make_zip(root / "scifact.zip")
    monkeypatch.setitem(dl.BEIR_MD5, "scifact", _md5(z))
    dest = tmp_path / "data" / "beir"
    monkeypatch.setenv("RAGCUN_DATA_DIR", str(tmp_path / "data"))  # so the real scifact is not found
    got = dl.download_beir(["scifact"], dest, base_url=url, progress=False)
    assert got["scifact"] == dest / "scifact"
    corpus, queries, qrels = load_beir(str(dest / "scifact"), "test")
    assert corpus == {"d1": {"title": "T", "text": "hello world"}} and qrels == {"q1": {"d1": 1}}
    assert sorted(p.name for p in dest.iterdir()) == ["scifact"]  # zip and temp files gone
    z.unlink()  # a second call must not touch the network
    assert dl.download_beir(["scifact"], dest, base_url=url, progress=False)["scifact"] == dest / "scifact"


def test_md5_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    _make_zip(root / "scifact.zip")
    monkeypatch.setitem(dl.BEIR_MD5, "scifact", "0" * 32)
    monkeypatch.setenv("RAGCUN_DATA_DIR", str(tmp_path / "data"))
    dest = tmp_path / "data" / "beir"
    with pytest.raises(dl.DownloadError, match="MD5 mismatch"):
        dl.download_beir(["scifact"], dest, base_url=url, progress=False)
    assert not (dest / "scifact").exists()
    assert list(dest.rglob("*")) == []


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    z = _make_zip(root / "nfcorpus.zip", "nfcorpus")
    monkeypatch.setitem(dl.BEIR_MD5, "nfcorpus", _md5(z))
    monkeypatch.setenv("RAGCUN_DATA_DIR", str(tmp_path / "data"))
    _Handler.truncate = {"nfcorpus.zip"}
    dest = tmp_path / "data" / "beir"
    with pytest.raises(dl.DownloadError, match="interrupted"):
        dl.download_beir(["nfcorpus"], dest, base_url=url, progress=False)
    assert not (dest / "nfcorpus").exists()
    assert list(dest.rglob("*")) == []


def test_bad_archive_is_not_installed(tmp_path):
    bad = tmp_path / "x.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x/readme.txt", "not a dataset")
    with pytest.raises(dl.DownloadError, match="no corpus.jsonl"):
        dl.install_beir_zip(bad, "x", tmp_path / "beir")
    assert not (tmp_path / "beir" / "x").exists()
    assert [p.name for p in (tmp_path / "beir").iterdir()] == []


def test_offline_fails_fast_with_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGCUN_DATA_DIR", str(tmp_path / "data"))
    # port 9 on localhost: connection refused at once, like being offline
    with pytest.raises(dl.DownloadError, match=r"cannot reach .*looks for local copies in: .*data/beir/fiqa"):
        dl.download_beir(["fiqa"], tmp_path / "data" / "beir", base_url="http://127.0.0.1:9", timeout=2,
                         progress=False)


def test_unknown_name_and_restricted(tmp_path, caplog):
    with pytest.raises(ValueError, match="unknown BEIR dataset"):
        dl.download_beir(["scifact", "nosuch"], tmp_path, progress=False)
    with caplog.at_level("WARNING"):
        assert dl.download_beir(["robust04"], tmp_path, progress=False) == {}
    assert "not hosted by BEIR" in caplog.text


def test_file_url_mirror(tmp_path, monkeypatch):
    z = _make_zip(tmp_path / "scifact.zip")
    monkeypatch.setitem(dl.BEIR_MD5, "scifact", _md5(z))
    monkeypatch.setenv("RAGCUN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(dl.BEIR_URL_ENV, tmp_path.as_uri())
    got = dl.download_beir(["scifact"], tmp_path / "out", progress=False)
    assert (got["scifact"] / "qrels" / "test.tsv").exists()
