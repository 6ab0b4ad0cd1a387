"""The IRIS research-note report: results loading, the note (ko/en), Markdown + HTML fragment, plots."""

from iris_pipeline.report.note import build_note
from iris_pipeline.report.render import ALLOWED_HTML_TAGS, to_html, to_markdown
from iris_pipeline.report.results import BenchResults, load_results
from iris_pipeline.report.writer import ReportFiles, write_report

__all__ = ["ALLOWED_HTML_TAGS", "BenchResults", "ReportFiles", "build_note", "load_results", "to_html",
           "to_markdown", "write_report"]
