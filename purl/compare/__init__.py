"""The head-to-head harness behind ``purl compare`` and ``purl report``.

A comparison is a grid of *cells* (method label x target sparsity x seed) on one
task. Every cell starts from the same cached dense model, data split,
fine-tuning budget and evaluation; each finished cell is appended to
``results.csv`` at once, so an interrupted comparison resumes where it stopped.
The methods themselves are supplied by the caller (the CLI wires
``baselines`` and ``agents``), which keeps this core package free of them.
"""

from purl.compare.cells import CSV_COLUMNS, Cell, ResultsTable
from purl.compare.report import write_report
from purl.compare.runner import plan_cells, run_comparison

__all__ = ["CSV_COLUMNS", "Cell", "ResultsTable", "plan_cells", "run_comparison", "write_report"]
