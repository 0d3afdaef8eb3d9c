"""constraints.txt is generated from the environment the tests run in, not kept by hand."""

from __future__ import annotations

import importlib.metadata as md
import re
import site
from pathlib import Path

from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for n, line in enumerate(LOCK.read_text().splitlines(), start=1):
        if line.startswith("#") or not line.strip():
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        assert m, f"{LOCK.name}:{n}: not a 'name==version' pin: {line!r}"
        pins[canonicalize_name(m[1])] = m[2]
    return pins


def test_every_pin_is_what_is_installed():
    pins = _pins()
    # the venv's site-packages, as pip freeze (and so `make lock`) sees it: importing setuptools (the OpenVINO
    # converter does, through torch) appends setuptools/_vendor to sys.path, with older vendored copies of
    # packaging and platformdirs that are not installed packages
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in md.distributions(path=site.getsitepackages())}
    assert {"torch", "sentence-transformers", "transformers", "faiss-cpu", "langchain-core"} <= set(pins)
    wrong = {k: (v, installed.get(k)) for k, v in pins.items() if installed.get(k) != v}
    assert not wrong, f"constraints.txt differs from this environment (run `make lock`): {wrong}"
    assert pins["torch"].startswith("2.13.0")
    assert "ragcun" not in pins


def test_the_pinned_install_resolves_the_framework_extras(tmp_path):
    """`pip install -c constraints.txt ".[langchain]"` plus the LangChain integrations a RAG user adds next
    resolves against the package index (a dry run: nothing is installed)."""
    import subprocess
    import sys

    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "-c", str(LOCK),
           f"{LOCK.parent}[langchain,llamaindex]", "langchain-community", "--report", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and ("No matching distribution" not in proc.stderr
                                 and "conflict" not in proc.stderr
                                 and "ResolutionImpossible" not in proc.stderr):
        import pytest

        pytest.skip(f"no package index reachable here: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    chosen = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    pins = _pins()
    assert "langchain-community" in chosen and chosen["langchain-core"] == pins["langchain-core"]
    assert all(chosen[k] == v for k, v in pins.items() if k in chosen and k != "ragcun")
