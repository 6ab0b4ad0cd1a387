"""Build the research note (the users' IRIS format) from benchmark results, in Korean or English.

Every number in the note is read from the results files; the only other inputs are the names the
user passes (author, reviewer, stage of research). A figure the run did not measure shows as "n/a".
"""

from __future__ import annotations

import math
from datetime import datetime

from iris_pipeline.errors import InputError
from iris_pipeline.report.document import Document, Image, ItemList, Section, Table, ref_mark
from iris_pipeline.report.results import NA, TARGET_FIGURES, BenchResults, Verdict
from iris_pipeline.report.texts import ABSENT, FIGURE_LABELS, FIGURE_UNITS, LANGUAGES, STAGE_LABELS, TEXTS

# Decimals shown per kind of figure (the report test parses them back with this precision).
DECIMALS = {"ms": 1, "cps": 2, "gb": 2, "pct": 1, "s": 1}
_FIGURE_DECIMALS = {"latency_ms": "ms", "first_chunk_ms": "ms", "throughput_cps": "cps", "peak_mem_gb": "gb"}
PLOT_KEYS = ("stages", "latency", "memory")


def fmt(value: float, kind: str) -> str:
    """A number as shown in the report: fixed decimals per kind, "n/a" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return f"{value:.{DECIMALS[kind]}f}"


def fmt_clip(clip_s: float) -> str:
    return f"{clip_s:g}"


def fmt_count(value: float) -> str:
    return NA if math.isnan(value) else f"{value:.0f}"


def _date(timestamp: str, lang: str) -> str:
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp or NA
    text = TEXTS[lang]
    weekdays = text["weekday"].split() if " " in text["weekday"] else list(text["weekday"])
    return text["date_format"].format(y=moment.year, m=moment.month, d=moment.day, w=weekdays[moment.weekday()])


def utilisation_column(results: BenchResults) -> str:
    """"sm_active_pct" where any row has it (Hopper GPM), else "gpu_busy_pct" (docs/figures.md)."""
    if any(not math.isnan(r.numbers["sm_active_pct"]) for r in results.e2e):
        return "sm_active_pct"
    return "gpu_busy_pct"


def _clip_verdict(verdicts: list[Verdict]) -> str:
    if not verdicts:
        return NA
    for outcome in ("FAIL", "MARGINAL", "INVALID"):
        figures = [v.figure for v in verdicts if v.verdict == outcome]
        if figures:
            return f"{outcome} ({', '.join(dict.fromkeys(figures))})"
    return "PASS"


def results_table(results: BenchResults, lang: str) -> Table:
    t = TEXTS[lang]
    util = utilisation_column(results)
    header = [t["col_clip"], t["col_runs"], t["col_latency"], t["col_ci"], t["col_latency_target"], t["col_first"],
              t["col_first_target"], t["col_cps_c1"], t["col_cps_sat"], t["col_conc"], t["col_cps_target"],
              t["col_mem"], t["col_mem_target"], t["col_sm_active" if util == "sm_active_pct" else "col_gpu_busy"],
              t["col_verdict"]]
    rows = []
    for row in results.e2e:
        clip = row.clip_s
        n = row.numbers
        rows.append([
            fmt_clip(clip), str(row.n_runs),
            fmt(row.latency_ms["p50"], "ms"),
            f"{fmt(row.latency_ms['ci_low'], 'ms')}–{fmt(row.latency_ms['ci_high'], 'ms')}",
            fmt(results.target(clip, "latency_ms"), "ms"),
            fmt(row.first_chunk_ms["p50"], "ms"),
            fmt(results.target(clip, "first_chunk_ms"), "ms"),
            fmt(n["throughput_cps_c1"], "cps"),
            fmt(n["throughput_cps_sat"], "cps"),
            fmt_count(n["saturating_concurrency"]),
            fmt(results.target(clip, "throughput_cps"), "cps"),
            fmt(n["peak_mem_gb"], "gb"),
            fmt(results.target(clip, "peak_mem_gb"), "gb"),
            fmt(n[util], "pct"),
            _clip_verdict(results.verdicts_for(clip)),
        ])
    return Table(caption=t["table_results"], header=header, rows=rows)


def stages_table(results: BenchResults, lang: str) -> Table | None:
    names = results.stage_names()
    if not names:
        return None
    by_key = {(r.clip_s, r.stage): r for r in results.stages}
    rows = []
    for clip in results.clip_lengths:
        cells = [fmt_clip(clip)]
        for name in names:
            row = by_key.get((clip, name))
            cells.append(fmt(row.stage_ms["p50"], "ms") if row else NA)
        rows.append(cells)
    return Table(caption=TEXTS[lang]["table_stages"],
                 header=[TEXTS[lang]["col_stage_clip"]] + [STAGE_LABELS.get(n, n) for n in names], rows=rows)


def _targets_text(results: BenchResults, clip: float, lang: str) -> str:
    parts = []
    for figure in TARGET_FIGURES:
        for v in results.verdicts_for(clip):
            if v.figure == figure and not math.isnan(v.target):
                label = FIGURE_LABELS[lang].get(figure, figure)
                stat = f" ({v.statistic})" if v.statistic != NA else ""
                value = fmt(v.target, _FIGURE_DECIMALS.get(figure, "ms"))
                parts.append(f"{label}{stat} {_op(v.op)} {value} {FIGURE_UNITS.get(figure, '')}".rstrip())
                break
    return ", ".join(parts)


def throughput_table(results: BenchResults, lang: str) -> Table | None:
    """throughput.csv: per clip length and concurrency, each tts scheduler on its own line."""
    if not results.throughput:
        return None
    t = TEXTS[lang]
    rows = [[fmt_clip(r.clip_s), r.scheduler, str(r.concurrency), fmt(r.clips_per_s, "cps"), fmt(r.p50_ms, "ms"),
             fmt(r.p99_ms, "ms"), str(r.completed), t["yes"] if r.valid else t["no"]] for r in results.throughput]
    header = [t["col_clip"], t["col_scheduler"], t["col_concurrency"], t["col_cps"], t["col_p50"], t["col_p99"],
              t["col_completed"], t["col_valid"]]
    return Table(caption=t["table_throughput"], header=header, rows=rows)


def _purpose(results: BenchResults, lang: str) -> Section:
    t = TEXTS[lang]
    items = [t["purpose"].format(size=results.context["size"])]
    if results.verdicts:
        for clip in results.clip_lengths:
            targets = _targets_text(results, clip, lang)
            if targets:
                items.append(t["targets_line"].format(clip=fmt_clip(clip), targets=targets))
        if results.targets_source:
            items.append(t["targets_source"].format(source=results.targets_source))
    else:
        items.append(t["no_gates"] if results.summary_path is not None else t["no_targets"])
    return Section(t["s1"], [ItemList(items)])


def _engine_numbers(results: BenchResults) -> list[tuple[float | None, float, float, float, float]]:
    """(clip or None, attempted, succeeded, cache hits, build s). The runner writes the run's totals
    on every e2e row: identical rows are one run-level entry (clip None), rows that differ one per clip."""
    per_clip = []
    for row in results.e2e:
        n = row.numbers
        if not math.isnan(n["engine_build_attempted"]):
            per_clip.append((row.clip_s, n["engine_build_attempted"], n["engine_build_succeeded"],
                             n["engine_cache_hits"], n["engine_build_s"]))
    if len({tuple(repr(v) for v in entry[1:]) for entry in per_clip}) == 1:
        return [(None, *per_clip[0][1:])]
    return per_clip


def _per_clip(clip: float | None, lang: str) -> str:
    return "" if clip is None else TEXTS[lang]["per_clip"].format(clip=fmt_clip(clip))


def _work_done(results: BenchResults, lang: str) -> Section:
    t = TEXTS[lang]
    c = results.context
    gpu = f"{c['gpu_name']} x{c['gpu_count']}" if c["gpu_name"] != NA else t["no_gpu"]
    items = [t["env"].format(gpu=gpu, driver=c["driver_version"],
                             cuda=c["cuda_runtime_version"], cuda_driver=c["cuda_driver_version"],
                             torch=c["torch_version"], trt=c["tensorrt_version"], host=c["host"],
                             cpu=c["cpu_model"])]
    if results.stage_settings:
        stages = [f"{STAGE_LABELS.get(s, s)} {v['precision']}/{v['backend']}"
                  + (f" ({v['device']})" if v.get("device") and v["device"] != NA else "")
                  for s, v in results.stage_settings.items() if v["precision"] != NA or v["backend"] != NA]
        if stages:
            items.append(t["settings"].format(stages=", ".join(stages)))
    runs = sorted({r.n_runs for r in results.e2e})
    commit = c["git_commit"][:12] + (t["dirty"] if c["git_dirty"].lower() == "true" else "")
    items.append(t["bench"].format(clips="/".join(fmt_clip(x) for x in results.clip_lengths), size=c["size"],
                                   device=c["device"], runs="/".join(str(r) for r in runs),
                                   config_hash=c["config_hash"], commit=commit, timestamp=c["timestamp_utc"]))
    engines = _engine_numbers(results)
    if engines:
        detail = "; ".join(_per_clip(clip, lang) + t["engines_detail"].format(
            attempted=fmt_count(a), succeeded=fmt_count(s), hits=fmt_count(h), build_s=fmt(b, "s"))
            for clip, a, s, h, b in engines)
        items.append(t["engines"].format(detail=detail))
    return Section(t["s2"], [ItemList(items, ordered=True)])


def _results(results: BenchResults, lang: str) -> Section:
    t = TEXTS[lang]
    items = []
    if results.overall_verdict:
        items.append(t["verdict_overall"].format(verdict=results.overall_verdict))
    for index, row in enumerate(results.e2e):
        n = row.numbers
        items.append(t["result_line"].format(
            clip=fmt_clip(row.clip_s), p50=fmt(row.latency_ms["p50"], "ms"), low=fmt(row.latency_ms["ci_low"], "ms"),
            high=fmt(row.latency_ms["ci_high"], "ms"), runs=row.n_runs, first=fmt(row.first_chunk_ms["p50"], "ms"),
            cps=fmt(n["throughput_cps_sat"], "cps"), conc=fmt_count(n["saturating_concurrency"]),
            mem=fmt(n["peak_mem_gb"], "gb"), ref=ref_mark(1) if index == 0 else ""))
    attempted = sum(a for _, a, _, _, _ in _engine_numbers(results))
    succeeded = sum(s for _, _, s, _, _ in _engine_numbers(results) if not math.isnan(s))
    if attempted > 0:
        items.append(t["build_rate"].format(rate=f"{100 * succeeded / attempted:.0f}", attempted=fmt_count(attempted),
                                            succeeded=fmt_count(succeeded)))
    blocks = [ItemList(items), results_table(results, lang)]
    for table in (stages_table(results, lang), throughput_table(results, lang)):
        if table is not None:
            blocks.append(table)
    return Section(t["s3"], blocks)


def _op(op: str) -> str:
    return {"<=": "≤", ">=": "≥"}.get(op, op)


def _confidence(value: float, lang: str) -> str:
    """", confidence 95%" for a sampled statistic; nothing for a maximum or a rate (no confidence)."""
    return "" if math.isnan(value) else TEXTS[lang]["confidence"].format(value=f"{100 * value:g}%")


def problems(results: BenchResults, lang: str) -> list[str]:
    t = TEXTS[lang]
    items = []
    for v in results.verdicts:
        label = FIGURE_LABELS[lang].get(v.figure, v.figure)
        unit = FIGURE_UNITS.get(v.figure, "")
        kind = _FIGURE_DECIMALS.get(v.figure, "ms")
        if v.verdict == "FAIL":
            items.append(t["fail"].format(
                clip=fmt_clip(v.clip_s), figure=label, measured=f"{fmt(v.measured, kind)} {unit}".rstrip(),
                op=_op(v.op), target=f"{fmt(v.target, kind)} {unit}".rstrip(), statistic=v.statistic,
                confidence=_confidence(v.confidence, lang), reason=v.reason).rstrip())
        elif v.verdict == "INVALID":
            stat = f" ({v.statistic})" if v.statistic != NA else ""
            items.append(t["invalid"].format(clip=fmt_clip(v.clip_s), figure=label + stat, reason=v.reason or NA))
        elif v.verdict == "MARGINAL":
            stat = f" ({v.statistic})" if v.statistic != NA else ""
            items.append(t["marginal"].format(clip=fmt_clip(v.clip_s), figure=label + stat, reason=v.reason or NA))
    for clip, attempted, succeeded, _, _ in _engine_numbers(results):
        if not math.isnan(succeeded) and succeeded < attempted:
            items.append(t["build_failed"].format(where=_per_clip(clip, lang), failed=fmt_count(attempted - succeeded),
                                                  attempted=fmt_count(attempted), succeeded=fmt_count(succeeded)))
    return items or [t["no_problems"]]


def build_note(results: BenchResults, lang: str = "ko", author: str | None = None, reviewer: str | None = None,
               stage_of_research: str | None = None, plots: dict[str, str] | None = None) -> Document:
    """The note as a `Document`; `plots` maps "stages"/"latency"/"memory" to file names beside it."""
    if lang not in LANGUAGES:
        raise InputError(f"--lang {lang!r}: not a report language; allowed: {', '.join(LANGUAGES)}")
    t = TEXTS[lang]
    keywords = [t["keywords_fixed"]]
    backends = sorted({v["backend"] for v in results.stage_settings.values() if v.get("backend", NA) != NA})
    precisions = sorted({v["precision"] for v in results.stage_settings.values() if v.get("precision", NA) != NA})
    keywords += backends + precisions
    if results.context["gpu_name"] != NA:
        keywords.append(results.context["gpu_name"])
    header = [
        t["date"].format(date=_date(results.context["timestamp_utc"], lang)),
        t["people"].format(author=author or ABSENT, reviewer=reviewer or ABSENT),
        t["stage"].format(stage=stage_of_research or ABSENT),
        t["keywords"].format(keywords=", ".join(keywords)),
    ]
    sections = [_purpose(results, lang), _work_done(results, lang), _results(results, lang),
                Section(t["s4"], [ItemList(problems(results, lang))])]
    if plots:
        captions = {"stages": t["plot_stages"], "latency": t["plot_latency"], "memory": t["plot_memory"]}
        sections.append(Section(t["s5"], [Image(plots[k], captions[k]) for k in PLOT_KEYS if k in plots]))
    references = [t["ref_csv"].format(name=results.csv_path.name)]
    if results.summary_path is not None:
        references.append(t["ref_summary"].format(name=results.summary_path.name))
    references.append(t["ref_figures"])
    return Document(header_lines=header, sections=sections, references=references, references_title=t["refs"])
