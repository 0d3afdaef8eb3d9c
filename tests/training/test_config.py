"""Config parsing: one table per object (its keyword arguments), --set overrides with types, clear errors,
and a one-line pointer for every key of the old flat format."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ragcun.losses import IsotropicGaussianLoss
from ragcun.modeling import IsotropicGaussianEncoder
from ragcun.training.args import RagcunTrainingArguments
from ragcun.training.config import (
    OLD_KEYS,
    ConfigError,
    TrainConfig,
    key_tables,
    load_config,
    parse_override,
)

REPO = Path(__file__).resolve().parents[2]


def test_tiny_config_file_and_defaults():
    cfg = load_config(REPO / "configs" / "train_tiny.toml")
    assert cfg.output_dim == 16 and cfg.per_device_train_batch_size == 4 and cfg.num_slices == 64
    assert cfg.learning_rate == 1e-5 and cfg.head_learning_rate == 5e-4
    assert cfg.report_to == []
    # a key not set keeps the default of the object it is passed to
    assert TrainConfig().weight_decay == RagcunTrainingArguments.weight_decay == 0.05
    assert TrainConfig().bf16 is False
    loss_defaults = inspect.signature(IsotropicGaussianLoss).parameters
    assert TrainConfig().temperature == loss_defaults["temperature"].default
    assert TrainConfig().max_seq_length is None  # the base's own


def test_the_tables_are_the_constructors_keyword_arguments():
    """[model] and [loss] hold exactly the keyword arguments of the encoder and the loss (less what a run
    supplies itself), so a new argument there is a config key with no code in between."""
    tables = key_tables()
    model = {k for k, t in tables.items() if t == "model"}
    loss = {k for k, t in tables.items() if t == "loss"}
    enc = set(inspect.signature(IsotropicGaussianEncoder).parameters) - {
        "model_name_or_path", "prompts", "modules", "device", "kwargs"}
    obj = set(inspect.signature(IsotropicGaussianLoss).parameters) - {
        "model", "corpus_sample", "distillation", "seed"}
    assert model == enc and loss == obj
    # every key of sentence-transformers' training arguments is a [training] key under its own name
    import dataclasses

    from sentence_transformers import SentenceTransformerTrainingArguments

    st = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
    assert st <= {k for k, t in tables.items() if t == "training"}


def test_overrides_win_and_are_typed(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[model]\nbase_model = "x"\n[loss]\nlambda_isotropy = 1.0\n[experiment]\narms = 3\n')
    cfg = load_config(f, ["lambda_isotropy=0", "freeze_base=true", "per_device_train_batch_size=32",
                          "report_to=[]", "output_dir=runs/a b", "loss.temperature=0.05",
                          "validation_max_queries=none", "bf16=true", "num_train_epochs=2"])
    assert cfg.lambda_isotropy == 0.0 and isinstance(cfg.lambda_isotropy, float)
    assert cfg.freeze_base is True and cfg.per_device_train_batch_size == 32 and cfg.report_to == []
    assert cfg.output_dir == "runs/a b" and cfg.temperature == 0.05 and cfg.validation_max_queries is None
    assert cfg.bf16 is True and cfg.num_train_epochs == 2.0
    assert cfg.to_dict()["loss"] == {"lambda_isotropy": 0.0, "temperature": 0.05}
    assert cfg.tables["model"] == {"base_model": "x", "freeze_base": True}


def test_dict_overrides_and_replace():
    cfg = load_config(None, {"seed": "7", "freeze_layers": 2})
    assert cfg.seed == 7 and cfg.freeze_layers == 2
    assert cfg.replace(seed=8).seed == 8 and cfg.seed == 7
    tables = TrainConfig.from_dict({"loss": {"num_slices": 8}, "seed": 3}).to_dict()
    assert tables["loss"] == {"num_slices": 8} and tables["training"] == {"seed": 3}


def test_transformers_own_argument_types_are_read():
    """sentence-transformers' keys keep their own types: a union of a string and a list, an enum, a dict."""
    cfg = load_config(None, ["report_to=tensorboard", "lr_scheduler_type=cosine",
                             "eval_strategy=steps", "eval_steps=5"])
    assert cfg.report_to == "tensorboard" and cfg.lr_scheduler_type == "cosine"
    with pytest.raises(ConfigError, match=r"--set eval_strategy: eval_strategy must be one of no, steps"):
        load_config(None, ["eval_strategy=sometimes"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[loss]\nlamda_isotropy = 1.0\n', "did you mean 'lambda_isotropy'"),
        ('[training]\nper_device_train_batch_size = "big"\n', "per_device_train_batch_size expects"),
        ('[teacher]\nteacher = "oracle"\n', "teacher must be one of"),
        ('[modle]\noutput_dim = 3\n', "unknown table [modle]"),
        ('[model]\nlambda_isotropy = 3\n', "'lambda_isotropy' belongs in [loss], not [model]"),
        ('output_dim = 3\n', "'output_dim' goes in the [model] table"),
        ('[training]\nper_device_train_batch_size = 0\n', "per_device_train_batch_size must be > 0"),
        ('[model]\nfreeze_base = 3\n', "freeze_base expects"),
        ('[model]\noutput_dim = 0\n', "[model] output_dim must be > 0"),
        ('[loss]\nloss_form = "convex"\nlambda_isotropy = 2.0\n', "needs lambda_isotropy in [0, 1]"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert message in str(err.value)
    if "must be" not in message and "needs" not in message:
        assert "bad.toml" in str(err.value)


@pytest.mark.parametrize("old", sorted(OLD_KEYS))
def test_every_old_key_points_to_its_new_table_and_name(tmp_path, old):
    table, new, _ = OLD_KEYS[old]
    for text in (f"{old} = 1\n", f"[optim]\n{old} = 1\n", f"[{table}]\n{old} = 1\n"):
        f = tmp_path / "old.toml"
        f.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(f)
        msg = str(err.value)
        assert "old.toml" in msg and f"{old!r} is now {new!r} in [{table}]" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=rf"--set {old}: '{old}' is now '{new}'"):
        load_config(None, [f"{old}=1"])


def test_an_old_table_is_named_with_where_its_keys_go(tmp_path):
    f = tmp_path / "old.toml"
    f.write_text("[output]\nlogging_steps = 5\n")
    gone = r"old\.toml: the \[output\] table is gone \('logging_steps' goes in \[training\]\)"
    with pytest.raises(ConfigError, match=gone):
        load_config(f)


def test_the_model_and_the_loss_check_their_arguments_themselves():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        IsotropicGaussianLoss(None, temperature=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_max must be > 0"):  # every argument, not only the config's keys
        IsotropicGaussianLoss(None, t_max=-1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigreg_on must be"):
        IsotropicGaussianLoss(None, sigreg_on="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_dim must be > 0"):
        IsotropicGaussianEncoder(base_model="unused", output_dim=-1)


def test_set_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lambda_isotropy")
    with pytest.raises(ConfigError, match="--set nope: unknown training key"):
        load_config(None, ["nope=1"])
    assert parse_override("report_to=[\"tensorboard\"]") == ("report_to", ["tensorboard"])
    assert parse_override("train_data=/a/b") == ("train_data", "/a/b")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.toml")


@pytest.mark.parametrize("text, message", [
    ("[model]\noutput_dimm = 512\n",
     r"t\.toml \[model\]: unknown key 'output_dimm' \(did you mean 'output_dim'\?\)"),
    ('[training]\nper_device_train_batch_size = "sixteen"\n',
     r"t\.toml \[training\]: per_device_train_batch_size expects int"),
    ("[loss]\ntemperature = inf\n", r"t\.toml \[loss\]: temperature must be a finite number"),
])
def test_errors_name_the_file_the_table_and_the_key(tmp_path, text, message):
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


@pytest.mark.parametrize("name", ["demo", "scifact", "paper", "gemma", "train_tiny"])
def test_every_shipped_config_loads(name):
    cfg = load_config(REPO / "configs" / f"{name}.toml")
    assert cfg.base_model
