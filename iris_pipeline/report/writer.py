"""Write a report directory: the note as Markdown and as an HTML fragment, and its PNG plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.errors import InputError
from iris_pipeline.metrics.records import atomic_open
from iris_pipeline.report.note import build_note
from iris_pipeline.report.plots import write_plots
from iris_pipeline.report.render import to_html, to_markdown
from iris_pipeline.report.results import BenchResults
from iris_pipeline.report.texts import LANGUAGES

REPORT_DIR_NAME = "report"


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    plots: dict[str, Path]


def write_report(results: BenchResults, out_dir: str | Path | None = None, lang: str = "ko",
                 author: str | None = None, reviewer: str | None = None,
                 stage_of_research: str | None = None) -> ReportFiles:
    """Write `report.<lang>.md`, `report.<lang>.html` and the plots into `out_dir`
    (default: `report/` beside the results CSV). Each file is replaced atomically."""
    if lang not in LANGUAGES:  # before anything is written
        raise InputError(f"--lang {lang!r}: not a report language; allowed: {', '.join(LANGUAGES)}")
    out = Path(out_dir) if out_dir is not None else results.csv_path.parent / REPORT_DIR_NAME
    plots = write_plots(results, out)
    doc = build_note(results, lang=lang, author=author, reviewer=reviewer, stage_of_research=stage_of_research,
                     plots={key: path.name for key, path in plots.items()})
    markdown = out / f"report.{lang}.md"
    fragment = out / f"report.{lang}.html"
    with atomic_open(markdown) as fh:
        fh.write(to_markdown(doc))
    with atomic_open(fragment) as fh:
        fh.write(to_html(doc))
    return ReportFiles(markdown=markdown, html=fragment, plots=plots)
