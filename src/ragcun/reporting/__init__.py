"""Reports: comparison tables across models and datasets, paired significance, isotropy, the experiment's
tables and the λ sweep."""

from ragcun.reporting.compare import DEFAULT_REPORT_METRICS, build_report, load_isotropy, load_result
from ragcun.reporting.experiment import build_experiment_report
from ragcun.reporting.stats import mean_ci, paired_test
from ragcun.reporting.sweep import write_sweep_report

__all__ = ["DEFAULT_REPORT_METRICS", "build_experiment_report", "build_report", "load_isotropy",
           "load_result", "mean_ci", "paired_test", "write_sweep_report"]
