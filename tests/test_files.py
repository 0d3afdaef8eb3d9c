"""Nothing already written is lost: directory replacement with no gap, and recovery from a kill between the
two renames of the fallback path (forced here exactly there, as `strace -e inject=rename:signal=SIGKILL`
did)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from ragcun.files import atomic_path, recover


def _write_dir(path, text):
    with atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / "f").write_text(text)


def test_directory_replacement_swaps_atomically(tmp_path):
    _write_dir(tmp_path / "ix", "old")
    _write_dir(tmp_path / "ix", "new")
    assert (tmp_path / "ix" / "f").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["ix"]  # no kept copy, no temporary folder


def test_kill_between_the_two_renames_keeps_the_index(tmp_path, tiny_model_path):
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.retrieval import GaussianRetriever

    model = tmp_path / "model"
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8).save(model)
    index = tmp_path / "ix"
    r = GaussianRetriever(str(model))
    r.add_documents(["one document", "another document", "a third one"], ids=["a", "b", "c"])
    r.save(index)
    script = textwrap.dedent(f"""
        import os, signal
        import ragcun.files as io
        from ragcun.retrieval import GaussianRetriever
        io._exchange = lambda a, b: False          # the fallback path: old aside, then new in
        io._between_renames = lambda: os.kill(os.getpid(), signal.SIGKILL)
        r = GaussianRetriever.load({str(index)!r})
        r.add_documents(["a fourth"], ids=["d"])
        r.save({str(index)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not index.exists()  # the window: the old index moved aside, the new one not yet in place
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith(".ix.old.") for n in left) and any(n.endswith(".tmp") for n in left)
    loaded = GaussianRetriever.load(index)  # load restores the kept copy
    assert len(loaded) == 3 and sorted(d.id for d in loaded.retrieve("document", top_k=3)) == ["a", "b", "c"]
    loaded.save(index)  # the next save clears what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix", "model"]
    assert recover(index) is None
