"""docs/figures.md defines every column of bench.csv: a column without a definition fails here."""

from __future__ import annotations

import re

from iris_pipeline.benchmark import schema
from iris_pipeline.benchmark.session import build_config
from iris_pipeline.metrics import capture_context, repository_root

DOC = repository_root() / "docs" / "figures.md"


def _defined_names() -> set[str]:
    """Names in backticks at the start of a table row of the doc's column reference."""
    return set(re.findall(r"^\| `([a-z0-9_]+)`", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE))


def test_every_bench_csv_column_is_defined_in_docs_figures_md():
    columns = schema.csv_columns(list(capture_context(build_config(device="cpu", size="tiny"))))
    missing = [c for c in columns if c not in _defined_names()]
    assert not missing, f"docs/figures.md has no definition for bench.csv column(s): {', '.join(missing)}"


def test_the_doc_defines_no_column_that_does_not_exist():
    columns = set(schema.csv_columns(list(capture_context(build_config(device="cpu", size="tiny")))))
    extra = sorted(_defined_names() - columns)
    assert not extra, f"docs/figures.md defines column(s) bench.csv does not have: {', '.join(extra)}"
