"""constraints.txt is generated from the environment the tests run in, not kept by hand."""

from __future__ import annotations

import importlib.metadata as md
import re
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
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    assert {"torch", "sentence-transformers", "transformers", "faiss-cpu", "langchain-core"} <= set(pins)
    wrong = {k: (v, installed.get(k)) for k, v in pins.items() if installed.get(k) != v}
    assert not wrong, f"constraints.txt differs from this environment (run `make lock`): {wrong}"
    assert pins["torch"].startswith("2.13.0")
    assert "ragcun" not in pins
