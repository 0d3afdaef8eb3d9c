"""Reports: comparison tables across models and datasets, paired significance, isotropy (the experiment's own
tables and the λ sweep's are :mod:`ragcun.experiment.report` and :mod:`ragcun.experiment.sweep_report`)."""

from ragcun.reporting.compare import DEFAULT_REPORT_METRICS, build_report, load_isotropy, load_result
from ragcun.reporting.stats import mean_ci, paired_test

__all__ = ["DEFAULT_REPORT_METRICS", "build_report", "load_isotropy", "load_result", "mean_ci", "paired_test"]
