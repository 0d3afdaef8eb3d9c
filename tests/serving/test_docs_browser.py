"""``/docs`` and ``/redoc`` render in a real headless browser with every host but 127.0.0.1 unreachable:
Swagger UI's and ReDoc's JavaScript run from the server's own assets and draw every route (``make browser``
installs Chromium on Debian/Ubuntu as root; ``make test-slow`` runs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

pytest.importorskip("fastapi")

from tests.serving.server import start, stop  # noqa: E402
from tests.serving.test_serve_stack import build  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


class DevTools:
    """A headless Chromium driven over the DevTools protocol (websockets): open a page, evaluate JS."""

    def __init__(self, browser: str, profile: str) -> None:
        self.proc = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no CDN can answer
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stderr=subprocess.PIPE, text=True)
        url = None
        for line in self.proc.stderr:  # type: ignore[union-attr]
            if "DevTools listening on " in line:
                url = line.split("DevTools listening on ", 1)[1].strip()
                break
        assert url, "Chromium did not open its DevTools endpoint"
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None)
        self.n = 0

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.n:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url: str) -> str:
        """Navigate the browser's own (visible, so rendering) tab to ``url``; return its session."""
        pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        target = pages[0]["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.navigate", session, url=url)
        return session

    def evaluate(self, session: str, expression: str) -> object:
        res = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return res["result"].get("value")

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait()


@pytest.mark.slow
def test_docs_render_offline_in_headless_chromium(tiny_model_path, tmp_path):
    from ragcun.modeling import IsotropicGaussianEncoder

    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium (make browser: apt-get install chromium)")
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16).save(tmp_path / "model")
    idx = build(tmp_path / "model", tmp_path / "docs-index")
    proc, base = start([str(idx)], tmp_path / "log")
    chrome = DevTools(browser, str(tmp_path / "profile"))
    try:
        page = chrome.open(f"{base}/docs")
        paths: list[str] = []
        deadline = time.time() + 60
        while time.time() < deadline and not paths:  # Swagger UI fetches /openapi.json, then draws
            time.sleep(0.5)
            paths = chrome.evaluate(page, "[...document.querySelectorAll('.opblock-summary-path')]"
                                          ".map(e => e.dataset.path || e.textContent)") or []
        title = chrome.evaluate(page, "document.querySelector('.swagger-ui .title')?.textContent")
        page = chrome.open(f"{base}/redoc")
        operations: list[str] = []
        deadline = time.time() + 60
        while time.time() < deadline and len(operations) < 6:  # ReDoc draws one heading per operation
            time.sleep(0.5)
            operations = chrome.evaluate(page, "[...document.querySelectorAll('h2')]"
                                               ".map(e => e.textContent)") or []
    finally:
        chrome.close()
        stop(proc)
    # what Swagger UI's JavaScript draws (none of it is in the served HTML): the title, a block per route
    assert title and "ragcun" in title, title
    for route in ("/search", "/search/batch", "/v1/embeddings", "/embed", "/documents", "/health"):
        assert route in paths, (route, paths)
    assert any("Search" in o for o in operations) and len(operations) >= 6, operations
