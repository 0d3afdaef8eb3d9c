"""Loading a model for encoding: the one loader every command, the experiment and the retriever use, and the
one place that sets and checks the encoding batch size and ``max_seq_length``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def open_model(path: str | os.PathLike, device: str | None = None, ragcun_class: bool = False) -> Any:
    """Load a path or alias: a plain ``SentenceTransformer`` (as every command encodes with), or with
    ``ragcun_class`` a saved ragcun model as :class:`~ragcun.modeling.IsotropicGaussianEncoder` (its base
    and head as parts, for the views that evaluate before the head)."""
    if ragcun_class and (Path(path) / "ragcun_config.json").is_file():
        from ragcun.modeling import IsotropicGaussianEncoder

        return IsotropicGaussianEncoder.from_pretrained(path) if device is None else \
            IsotropicGaussianEncoder.from_pretrained(path, device=device)
    from ragcun.resolve import load_sentence_transformer

    return load_sentence_transformer(path, device=device)


def load_model(model: Any, device: str | None = None, max_seq_length: int | None = None,
               runtime: Any = None, calibration: Any = None) -> tuple[Any, str]:
    """A loaded SentenceTransformer and a display name, from a path/alias or an already loaded model,
    truncating inputs to ``max_seq_length`` tokens (checked against what the model can take) and
    running under ``runtime`` (a :class:`ragcun.runtime.Runtime`; None = torch fp32, the model as loaded;
    ``calibration``: texts to be encoded, for OpenVINO int8)."""
    owned = isinstance(model, str | os.PathLike)
    if owned:
        from ragcun.modeling import run_info

        # a trained model is named by its run (demo/isotropy), not "best"
        name = (run_info(model) or {}).get("name") or str(model)
        model = open_model(model, device)
    else:
        card = getattr(model, "model_card_data", None)
        name = (getattr(card, "model_name", None) or getattr(card, "base_model", None)
                if card is not None else None)
        name = str(name or type(model).__name__)
    if max_seq_length is not None:
        set_max_seq_length(model, max_seq_length, name)
    if runtime is not None and not runtime.is_reference:
        from ragcun.runtime import prepare_model

        model = prepare_model(model, runtime, device=device, owned=owned, calibration=calibration)
    return model, name


#: The largest encoding batch accepted: 65,536 texts of 512 tokens at hidden size 768 are 100 GB of fp32
#: activations per layer, beyond any single device; larger is a typo, not a setting.
MAX_BATCH_SIZE = 65_536


def check_batch_size(batch_size: int | None, device: Any = None) -> int:
    """``batch_size``, checked; None = the measured default for ``device``
    (:func:`ragcun.runtime.default_batch_size`)."""
    if batch_size is None:
        from ragcun.runtime import default_batch_size

        return default_batch_size(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    # its activations alone would not fit: fail now, not after the model loads
    if batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"batch_size {batch_size:,} is more than {MAX_BATCH_SIZE:,} texts per forward pass")
    return int(batch_size)


def set_max_seq_length(model: Any, max_seq_length: int, name: str = "the model") -> None:
    """Truncate the model's inputs to ``max_seq_length`` tokens, refusing more than it can take."""
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise ValueError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
    limit = position_limit(model)
    if limit is not None and max_seq_length > limit:
        raise ValueError(f"max_seq_length={max_seq_length} is above what {name} can take ({limit} tokens)")
    model.max_seq_length = int(max_seq_length)


def position_limit(model: Any) -> int | None:
    """The most tokens the model's transformer takes (its position embeddings), if it says."""
    try:
        cfg = model[0].auto_model.config
    except (TypeError, AttributeError, IndexError, KeyError):
        return None
    n = getattr(cfg, "max_position_embeddings", None)
    if not isinstance(n, int):
        return None
    # RoBERTa-style models (MPNet too) reserve padding_idx + 1 positions
    return n - 2 if getattr(cfg, "model_type", "") in ("roberta", "mpnet", "xlm-roberta", "camembert") else n




def load_for_index(model: Any, device: str | None) -> tuple[Any, str, str | None]:
    """``(loaded model, the name a saved index reloads it by, its location or None)`` from a path, an alias
    or a loaded model: :func:`load_model`'s loading, with the names an index manifest needs."""
    if isinstance(model, str | os.PathLike):
        from ragcun.resolve import resolve_model

        resolved = resolve_model(model)
        loaded = open_model(model, device)
        location = str(Path(resolved.location).resolve()) if resolved.source != "hub" else resolved.location
        name = str(model) if resolved.source != "local" else str(Path(model).resolve())
        return loaded, name, location
    if not hasattr(model, "encode"):
        raise TypeError("model must be a path, an alias or a SentenceTransformer, "
                        f"got {type(model).__name__}")
    return model, describe(model), None


def describe(model: Any) -> str:
    """A loaded model's name for a manifest when it was given as an object: its ragcun base, else its
    weights' name."""
    cfg = getattr(model, "ragcun_config", None) or {}
    if cfg.get("base_model"):
        return f"{cfg['base_model']} + ragcun head ({cfg.get('output_dim')})"
    try:
        first = model[0]
        name = first.auto_model.config._name_or_path
        if name:
            return str(name)
    except Exception:  # noqa: BLE001 - informative only
        pass
    return type(model).__name__


def is_normalized(model: Any) -> bool:
    """Whether the model's *output* is unit-norm: its last module is a ``Normalize`` (a Gaussian encoder keeps
    its base's ``Normalize`` before the head, and its output is not normalised)."""
    try:
        modules = list(model)
    except TypeError:
        return False
    return bool(modules) and type(modules[-1]).__name__ == "Normalize"


def model_dimension(model: Any) -> int:
    getter = (getattr(model, "get_embedding_dimension", None)
              or getattr(model, "get_sentence_embedding_dimension", None))
    dim = getter() if getter else None
    if not dim:
        dim = int(np.asarray(model.encode(["dimension probe"])).shape[-1])
    return int(dim)
