"""The example notebooks are saved with their outputs (``make notebooks``), and run top to bottom on a CPU
(small config) through nbclient."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"


def test_notebooks_are_saved_with_their_outputs():
    """Every code cell ran, in order, without an error; the isotropy notebook shows its figures."""
    nbformat = pytest.importorskip("nbformat")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1)), (
            f"{path.name}: not run in order")
        assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])), path.name
        assert sum(bool(c.get("outputs")) for c in code) >= len(code) - 1, (
            f"{path.name}: saved without outputs")
        text = str(book)
        assert "/work/" not in text and "/tmp/" not in text, (
            f"{path.name}: a machine's absolute path in the outputs")
    figures = nbformat.read(NOTEBOOKS / "02_verify_isotropy.ipynb", as_version=4)
    assert sum("image/png" in o.get("data", {}) for c in figures.cells for o in c.get("outputs", [])) >= 3


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch, minilm_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RAGCUN_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_train.ipynb", "02_verify_isotropy.ipynb", "03_rag_evaluation.ipynb"]
    for name in names:  # in order: 02 and 03 use the model 01 trains
        book = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbclient.NotebookClient(book, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert ((tmp_path / "train" / "best" / "modules.json").exists()
            and (tmp_path / "index" / "manifest.json").exists())
    assert list((tmp_path / "isotropy").glob("*.png"))
