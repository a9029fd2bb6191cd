"""Suites of (task x method x seed) runs, locally or on Ray; results store, tables and plots."""

from robopref.bench.report import aggregate, markdown_table, write_report
from robopref.bench.suite import SuiteConfig, cells, load_suite, read_results, run_suite

__all__ = [
    "SuiteConfig",
    "aggregate",
    "cells",
    "load_suite",
    "markdown_table",
    "read_results",
    "run_suite",
    "write_report",
]
