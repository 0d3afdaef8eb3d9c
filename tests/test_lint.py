"""ruff's rules, line length included, hold for the whole tree (src, tests, benchmarks, examples and the
notebooks): `make lint` runs the same check, and this test makes CI run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean_at_the_project_line_length():
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is part of the dev extra"
    proc = subprocess.run([exe, "check", "--no-cache", "src", "tests", "benchmarks", "examples"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    settings = subprocess.run([exe, "check", "--show-settings", "src/ragcun/__init__.py"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    enabled = settings.split("linter.rules.enabled = [", 1)[1].split("]", 1)[0]
    # enforced, not ignored
    assert "linter.line_length = 110" in settings and "line-too-long (E501)" in enabled
