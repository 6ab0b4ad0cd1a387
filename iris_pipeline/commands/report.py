"""`iris report RESULTS`: the research note (Markdown + HTML fragment + plots) from a benchmark run."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        results: Path = typer.Argument(..., help="results directory (with bench.csv, summary.json) or a bench.csv"),
        lang: str = typer.Option("ko", "--lang", help="language of the note: ko (default) or en"),
        out: Path | None = typer.Option(None, "--out", help="output directory (default: report/ beside the CSV)"),
        author: str | None = typer.Option(None, "--author", help="author's name (○ when not given)"),
        reviewer: str | None = typer.Option(None, "--reviewer", help="reviewer's name (○ when not given)"),
        stage_of_research: str | None = typer.Option(None, "--stage-of-research",
                                                     help="stage of research, e.g. '1단계 – 기초연구 단계'"),
        print_markdown: bool = typer.Option(False, "--print", help="also print the Markdown to stdout"),
    ) -> None:
        """Write the IRIS research note for a benchmark run: Markdown, HTML fragment and PNG plots."""
        from iris_pipeline.report import load_results, write_report

        files = write_report(load_results(results), out, lang=lang, author=author, reviewer=reviewer,
                             stage_of_research=stage_of_research)
        if print_markdown:
            typer.echo(files.markdown.read_text(encoding="utf-8"), nl=False)
        for path in (files.markdown, files.html, *files.plots.values()):
            typer.echo(f"wrote {path}", err=print_markdown)
