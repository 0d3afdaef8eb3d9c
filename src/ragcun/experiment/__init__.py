"""The experiment: the three-arm ablation beside the untouched base, and the λ sweep."""

from ragcun.experiment.config import (
    DEFAULT_ARMS,
    ExperimentConfig,
    ExperimentError,
    arm_config,
    load_experiment,
)
from ragcun.experiment.run import run_experiment
from ragcun.experiment.sweep import run_sweep
from ragcun.experiment.views import evaluation_views

__all__ = ["DEFAULT_ARMS", "ExperimentConfig", "ExperimentError", "arm_config", "evaluation_views",
           "load_experiment", "run_experiment", "run_sweep"]
