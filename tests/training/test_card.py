"""A trained model's card names its real base model and its run, not "Unknown" and "best"."""

from __future__ import annotations

from ragcun.modeling import run_info
from ragcun.modeling.card import describe_model
from ragcun.training import load_config
from ragcun.training.config import run_name, run_record
from ragcun.training.trainer import build_model


def test_card_names_the_base_and_the_run(tmp_path):
    cfg = load_config(None, ["base_model=all-MiniLM-L6-v2",
                             f"output_dir={tmp_path / 'runs' / 'demo' / 'arms' / 'iso'}",
                             "max_seq_length=32", "lambda_isotropy=0.5"])
    assert run_name(cfg) == "demo/iso"
    assert run_name(cfg.replace(run_name="paper/frozen")) == "paper/frozen"
    model = build_model(cfg, device="cpu")
    describe_model(model, run_record(cfg, train_examples=123))
    model.save(str(tmp_path / "m"))
    card = (tmp_path / "m" / "README.md").read_text()
    assert ("sentence-transformers/all-MiniLM-L6-v2" in card
            and "Unknown](https://huggingface.co/unknown)" not in card)
    assert "ragcun demo/iso" in card and "λ_iso = 0.5" in card
    info = run_info(tmp_path / "m")
    assert info["name"] == "demo/iso" and info["train_examples"] == 123
    assert info["loss"]["lambda_isotropy"] == 0.5 and info["training"]["head_learning_rate"] == 5e-4
