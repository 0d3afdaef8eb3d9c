"""Config parsing: TOML tables flattened, --set overrides with types, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragcun.training.config import ConfigError, TrainConfig, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]


def test_tiny_config_file_and_defaults():
    cfg = load_config(REPO / "configs" / "train_tiny.toml")
    assert cfg.output_dim == 16 and cfg.batch_size == 4 and cfg.num_slices == 64
    assert cfg.base_learning_rate == 1e-5 and cfg.projection_learning_rate == 5e-4
    assert cfg.report_to == []
    assert TrainConfig().weight_decay == 0.05 and TrainConfig().mixed_precision == "no"


def test_overrides_win_and_are_typed(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('base_model = "x"\nlambda_isotropy = 1.0\n[experiment]\narms = 3\n')
    cfg = load_config(f, ["lambda_isotropy=0", "freeze_base=true", "batch_size=32", "report_to=[]",
                          "output_dir=runs/a b", "loss.temperature=0.05", "validation_max_queries=none",
                          "mixed_precision=bf16", "epochs=2"])
    assert cfg.lambda_isotropy == 0.0 and isinstance(cfg.lambda_isotropy, float)
    assert cfg.freeze_base is True and cfg.batch_size == 32 and cfg.report_to == []
    assert cfg.output_dir == "runs/a b" and cfg.temperature == 0.05 and cfg.validation_max_queries is None
    assert cfg.mixed_precision == "bf16" and cfg.epochs == 2.0


def test_dict_overrides_and_replace():
    cfg = load_config(None, {"seed": "7", "freeze_layers": 2})
    assert cfg.seed == 7 and cfg.freeze_layers == 2
    assert cfg.replace(seed=8).seed == 8 and cfg.seed == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('lamda_isotropy = 1.0\n', "did you mean 'lambda_isotropy'"),
        ('batch_size = "big"\n', "batch_size expects"),
        ('mixed_precision = "fp8"\n', "mixed_precision must be one of"),
        ('[modle]\noutput_dim = 3\n', "unknown table [modle]"),
        ('output_dim = 3\n[model]\noutput_dim = 4\n', "set twice"),
        ('batch_size = 0\n', "batch_size must be >= 1"),
        ('freeze_base = 3\n', "freeze_base expects"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert message in str(err.value)
    if "must be >= 1" not in message:
        assert "bad.toml" in str(err.value)


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
     r"t\.toml \[model\]: unknown training key 'output_dimm' \(did you mean 'output_dim'\?\)"),
    ('[optim]\nbatch_size = "sixteen"\n', r"t\.toml \[optim\]: batch_size expects int"),
    ("[loss]\ntemperature = inf\n", r"t\.toml \[loss\]: temperature must be a finite number"),
])
def test_errors_name_the_file_the_table_and_the_key(tmp_path, text, message):
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
