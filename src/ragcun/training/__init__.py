"""Training: config, ``train(config)`` on sentence-transformers' trainer, the frozen fast path,
torchrun launching and preflight checks. Heavy imports happen inside the functions."""

from __future__ import annotations

from typing import Any

from ragcun.training.config import ConfigError, TrainConfig, load_config, parse_override


def train(config: TrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Train one encoder (see :func:`ragcun.training.trainer.train`)."""
    from ragcun.training.trainer import train as _train

    return _train(config, callbacks=callbacks)


__all__ = ["ConfigError", "TrainConfig", "load_config", "parse_override", "train"]
