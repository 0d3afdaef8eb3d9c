#!/usr/bin/env python
"""Run the example notebooks top to bottom and save them *with* their outputs (``make notebooks``).

A repository page then shows what each one prints and plots. They run in order (2 and 3 use the model 1
trains), from the repository root, with their working folder under ``runs/notebooks``; the paths they
print are made relative to the repository so that a saved notebook does not show this machine's layout.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _relative(book: nbformat.NotebookNode) -> None:
    """Outputs without this machine's layout (paths relative, data and cache folders by name) or tqdm's
    warning."""
    swaps = [(os.environ[v].rstrip("/"), f"${v}") for v in ("RAGCUN_DATA_DIR", "RAGCUN_CACHE_DIR")
             if os.environ.get(v)]
    swaps += [(str(REPO) + "/", ""), (str(REPO), ".")]

    def clean(text: str) -> str:
        for a, b in swaps:
            text = text.replace(a, b)
        return text

    for cell in book.cells:
        # tqdm's "IProgress not found" (no ipywidgets in the kernel) is not the notebook's
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"]
                               if "TqdmWarning: IProgress" not in o.get("text", "")]
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = clean(out["text"])
            if "text/plain" in out.get("data", {}):
                out["data"]["text/plain"] = clean(out["data"]["text/plain"])


def main(names: list[str]) -> int:
    os.environ.setdefault("RAGCUN_NOTEBOOK_DIR", str(REPO / "runs" / "notebooks"))
    os.environ.setdefault("TQDM_DISABLE", "1")  # a bar in a saved output is a wall of carriage returns
    for path in sorted(HERE.glob("*.ipynb")) if not names else [Path(n) for n in names]:
        t0 = time.perf_counter()
        book = nbformat.read(path, as_version=4)
        NotebookClient(book, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO)}}).execute()
        errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            print(f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}", file=sys.stderr)
            return 1
        _relative(book)
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(book, tmp)
        tmp.replace(path)
        print(f"{path.name}: ran in {time.perf_counter() - t0:.0f} s, saved with its outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
