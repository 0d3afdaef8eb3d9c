"""``ragcun push``: the staged folder is a loadable model whose card is complete (repository id, license,
parameters, base model, the results section right after the title, no placeholder), and the upload goes
through huggingface_hub's real client (here against an unreachable endpoint: one line, no traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ragcun.cli import app
from ragcun.modeling.card import END, START, write_card_section

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tiny_model_path, tmp_path_factory):
    from ragcun.modeling import IsotropicGaussianEncoder

    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16, hidden_dim=32, device="cpu")
    enc.ragcun_config["run"] = {"name": "demo/frozen", "base_model": "all-MiniLM-L6-v2"}
    enc.model_card_data.model_name = "ragcun demo/frozen: a test model"
    path = tmp_path_factory.mktemp("push") / "best"
    enc.save(path)
    write_card_section(path, f'{START}\n\n## ragcun evaluation\n\n| a | b |\n\n```python\n'
                             f'model = SentenceTransformer("{path}")\n```\n\n{END}\n')
    return path


def test_push_to_a_folder_writes_a_complete_card_and_a_loadable_model(model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "staged"
    res = runner.invoke(app, ["push", str(model_dir), "someone/gaussian-minilm", "--to", str(out)])
    assert res.exit_code == 0, res.output
    assert "license apache-2.0" in res.output and "ragcun_config.json" in res.output
    card = (out / "README.md").read_text()
    visible = re.sub(r"<!--.*?-->", "", card, flags=re.S)
    assert "sentence_transformers_model_id" not in card and "Unknown" not in visible
    assert (re.search(r"^license: apache-2.0$", card, re.M)
            and "base_model: sentence-transformers/all-MiniLM-L6-v2" in card)
    assert 'SentenceTransformer("someone/gaussian-minilm")' in card and str(model_dir) not in card
    n = sum(p.numel() for p in SentenceTransformer(str(out), device="cpu").parameters())
    assert f"**Parameters:** {n:,} = base" in card
    title, results, details = (card.index("\n# "), card.index("## ragcun evaluation"),
                               card.index("## Model Details"))
    assert title < results < details  # the results before the template's boilerplate
    model = SentenceTransformer(str(out), device="cpu")
    assert model.similarity_fn_name == "euclidean"


def test_dry_run_lists_and_bad_arguments_are_one_line(model_dir, tmp_path):
    res = runner.invoke(app, ["push", str(model_dir), "someone/m", "--dry-run"])
    assert res.exit_code == 0 and "dry run: nothing uploaded" in res.output and "modules.json" in res.output
    for args, fragment in (([str(model_dir), "no-slash"], "expected 'owner/name'"),
                           ([str(model_dir), "a/b/c"], "expected 'owner/name'"),
                           ([str(model_dir), "owner/bad name!"], "repository id 'owner/bad name!'"),
                           ([str(tmp_path / "missing"), "o/m"], "no such model folder"),
                           ([str(model_dir), "o/m", "--to", str(model_dir)], "is not an empty folder"),
                           ([str(model_dir), "o/m", "--dry-run", "--license", " "], "--license is empty")):
        res = runner.invoke(app, ["push", *args])
        assert (res.exit_code == 1 and fragment in " ".join(res.output.split())
                and "Traceback" not in res.output)


def test_unknown_base_license_asks_for_one(tiny_model_path, tmp_path):
    from ragcun.modeling import IsotropicGaussianEncoder

    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8, hidden_dim=16, device="cpu")
    enc.save(tmp_path / "m")
    res = runner.invoke(app, ["push", str(tmp_path / "m"), "o/m", "--dry-run"])
    assert res.exit_code == 1 and "pass --license" in res.output
    res = runner.invoke(app, ["push", str(tmp_path / "m"), "o/m", "--dry-run", "--license", "mit"])
    assert res.exit_code == 0 and "license mit" in res.output


def test_upload_failure_is_one_line(model_dir):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "0",
           "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    proc = subprocess.run([sys.executable, "-m", "ragcun", "push", str(model_dir), "someone/m"], env=env,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 1 and "upload to http://127.0.0.1:9/someone/m failed" in out
            and "Traceback" not in out)
