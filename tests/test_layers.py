"""The layering is enforced: import-linter's contracts in pyproject.toml (the pipeline's layers, evaluation
and retrieval independent, no cycles between sibling modules or packages) must all be kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra"
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_every_module_has_a_layer():
    """A new package or top-level module cannot escape the layering: each one is named in the contract."""
    import tomllib

    contract = next(c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
                    ["contracts"] if c["id"] == "layers")
    named = {m.strip() for layer in contract["layers"] for m in layer.split("|")}
    src = ROOT / "src" / "ragcun"
    modules = {f"ragcun.{p.stem}" for p in src.iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
               or (p.is_dir() and (p / "__init__.py").exists())}
    assert modules - named == set(), "name these in a layer of pyproject.toml's contract"
