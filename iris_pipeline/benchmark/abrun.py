"""`iris bench --ab REF`: prepare both checkouts and the shared inputs, run the interleaved check,
write ab.csv / ab.json, print the verdict per clip length.

ab.csv: one row per clip length: clip_s, base_ref, base_commit, n_base, n_head, base_latency_ms_p50,
head_latency_ms_p50, diff_ms, slowdown_pct, slowdown_ci_low_pct, slowdown_ci_high_pct, p_value,
threshold_pct, floor_ms, alpha, test, verdict (REGRESSION / OK / INVALID), reason, then the head's
context columns. ab.json: {"format": "iris-ab/1", "verdict", "base_ref", "base_commit", "settings",
"clips": [{... the row ..., "base_ms": [...], "head_ms": [...]}], "context"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iris_pipeline.benchmark import abtest, inputs
from iris_pipeline.benchmark.settings import BenchSettings
from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import InputError
from iris_pipeline.metrics import capture_context, repository_root, write_csv, write_json

AB_FORMAT = "iris-ab/1"


def run_ab_command(settings: BenchSettings, config: PipelineConfig, out_dir: Path, ref: str | None,
                   base_dir: Path | None, pairs: int, threshold: float, floor_ms: float, alpha: float,
                   console: Any, progress: Any, factory: str | None = None,
                   factory_args: tuple[dict, dict] = ({}, {})) -> int:
    import soundfile as sf
    from rich.table import Table

    head_root = repository_root()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with abtest.make_temp_dir("iris-ab-") as tmp:
        tmp = Path(tmp)
        if base_dir is not None:
            if not (Path(base_dir) / "iris_pipeline").is_dir():
                raise InputError(f"--ab-base-dir {base_dir}: no iris_pipeline package in that directory")
            base_root, base_sha, base_ref = Path(base_dir).resolve(), "n/a", str(base_dir)
        else:
            base_root = tmp / "base"
            base_sha, base_ref = abtest.export_ref(head_root, ref, base_root), ref
        reference = inputs.load_reference(settings.reference, settings.seed)
        reference_wav = tmp / "reference.wav"
        sf.write(str(reference_wav), reference.samples.cpu().numpy(), reference.sample_rate, subtype="FLOAT")
        scripts = {L: inputs.script_for(L, settings.language) for L in settings.clip_lengths}
        transcript = settings.transcript or inputs.reference_transcript(settings.language)
        warmup = settings.warmup if settings.warmup is not None else 2
        clips = abtest.run_ab(base_root, head_root, config.model_dump(mode="json"), settings.clip_lengths, pairs,
                              warmup, scripts, settings.language, reference_wav, transcript,
                              settings.avatar or inputs.default_avatar_path(), out_dir, threshold, floor_ms, alpha,
                              factory=factory, factory_args=factory_args, progress=progress)
    context = capture_context(config)
    rows = abtest.ab_rows(clips, context, base_ref, base_sha)
    verdict = (abtest.REGRESSION if any(c.comparison.verdict == abtest.REGRESSION for c in clips)
               else abtest.INVALID if any(c.comparison.verdict == abtest.INVALID for c in clips) else abtest.OK)
    write_csv(out_dir / "ab.csv", rows)
    write_json(out_dir / "ab.json", {
        "format": AB_FORMAT, "verdict": verdict, "base_ref": base_ref, "base_commit": base_sha,
        "settings": {"pairs": pairs, "warmup": warmup, "threshold": threshold, "floor_ms": floor_ms, "alpha": alpha,
                     "order": "alternating A B / B A per pair", **settings.model_dump(mode="json")},
        "rules": " ".join((abtest.__doc__ or "").split()),
        "clips": [{**row, "base_ms": c.base_ms, "head_ms": c.head_ms} for row, c in zip(rows, clips, strict=True)],
        "context": context})
    table = Table(title=f"A/B: working tree vs {base_ref}")
    for name in ("clip s", "base p50 ms", "head p50 ms", "slowdown", "p", "verdict", "reason"):
        table.add_column(name)
    for c in clips:
        r = c.comparison
        table.add_row(f"{c.clip_s:g}", f"{r.base_median:.4g}", f"{r.head_median:.4g}", f"{r.slowdown:+.1%}",
                      f"{r.p_value:.3g}", r.verdict, r.reason)
    console.print(table)
    console.print(f"A/B verdict: {verdict}; files: {out_dir / 'ab.csv'}, {out_dir / 'ab.json'}")
    return 1 if verdict == abtest.REGRESSION else 0
