"""The label-efficiency experiment (``persec experiment``): the grid and its cells
(:mod:`~persec.experiment.grid`), running them with caching and resume
(:mod:`~persec.experiment.run`), and the reports (:mod:`~persec.experiment.reports`)."""

from persec.experiment.grid import Cell, ExperimentConfig, plan
from persec.experiment.keys import config_hash
from persec.experiment.reports import collect_rows, write_reports
from persec.experiment.run import ExperimentResult, format_summary, run_experiment

__all__ = [
    "Cell",
    "ExperimentConfig",
    "ExperimentResult",
    "collect_rows",
    "config_hash",
    "format_summary",
    "plan",
    "run_experiment",
    "write_reports",
]
