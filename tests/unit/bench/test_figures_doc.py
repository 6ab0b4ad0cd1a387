"""docs/figures.md defines every column of bench.csv and throughput.csv: a column without a
definition, or a definition without a column, fails here."""

from __future__ import annotations

import re

import pytest

from iris_pipeline.benchmark import schema
from iris_pipeline.benchmark.session import build_config
from iris_pipeline.metrics import capture_context, repository_root

DOC = repository_root() / "docs" / "figures.md"


def _defined_names(section: str) -> set[str]:
    """Names in backticks at the start of a table row of the doc's `## <section>` section."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return set(re.findall(r"^\| `([a-z0-9_]+)`", text[start:end if end >= 0 else None], flags=re.MULTILINE))


def _columns(section: str) -> list[str]:
    if section == "bench.csv columns":
        return schema.csv_columns(list(capture_context(build_config(device="cpu", size="tiny"))))
    return list(schema.THROUGHPUT_FIGURES)  # its context columns are bench.csv's, defined there


SECTIONS = ["bench.csv columns", "throughput.csv columns"]


@pytest.mark.parametrize("section", SECTIONS)
def test_every_column_is_defined_in_docs_figures_md(section):
    missing = [c for c in _columns(section) if c not in _defined_names(section)]
    assert not missing, f"docs/figures.md ({section}) has no definition for column(s): {', '.join(missing)}"


@pytest.mark.parametrize("section", SECTIONS)
def test_the_doc_defines_no_column_that_does_not_exist(section):
    extra = sorted(_defined_names(section) - set(_columns(section)))
    assert not extra, f"docs/figures.md ({section}) defines column(s) the file does not have: {', '.join(extra)}"
