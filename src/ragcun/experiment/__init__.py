"""The experiment: the three-arm ablation beside the untouched base, and the λ sweep."""

from ragcun.experiment.config import DEFAULT_ARMS, ExperimentConfig, ExperimentError, load_experiment
from ragcun.experiment.run import arm_config, evaluation_views, run_experiment
from ragcun.experiment.sweep import run_sweep

__all__ = ["DEFAULT_ARMS", "ExperimentConfig", "ExperimentError", "arm_config", "evaluation_views",
           "load_experiment", "run_experiment", "run_sweep"]
