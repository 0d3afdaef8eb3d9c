"""The example notebooks run top to bottom on a CPU (small config), through nbclient."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"


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
        assert not any(c.get("outputs") for c in book.cells if c.cell_type == "code"), f"{name}: commit without outputs"
        nbclient.NotebookClient(book, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert (tmp_path / "train" / "best" / "modules.json").exists() and (tmp_path / "index" / "manifest.json").exists()
    assert list((tmp_path / "isotropy").glob("*.png"))
