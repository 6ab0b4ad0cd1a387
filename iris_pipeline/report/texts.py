"""The fixed wording of the research note, in Korean (the users' default) and English.

Placeholders are filled by `note.build_note`; every number comes from the results files.
"""

from __future__ import annotations

LANGUAGES = ("ko", "en")
ABSENT = "○"  # the seed note's mark for a name that is not given

TEXTS: dict[str, dict[str, str]] = {
    "ko": {
        "date": "📅 날짜: {date}",
        "people": "✍️ 작성자: {author} / ✅ 확인: {reviewer}",
        "stage": "🔬 진행 단계: {stage}",
        "keywords": "🏷️ 키워드: {keywords}",
        "keywords_fixed": "성능검증, 추론지연, GPU메모리, 처리량",
        "s1": "1. 연구 배경 및 목적",
        "s2": "2. 주요 수행 내용",
        "s3": "3. 결과 및 정량 지표",
        "s4": "4. 문제점 및 해결",
        "s5": "5. 그래프",
        "refs": "참고 자료",
        "purpose": "RVC → VALL-E X → FastPitch → Wav2Lip 파이프라인({size} 크기)의 클립 길이별 추론 지연, "
                   "첫 청크 지연, 처리량, GPU 메모리를 실제 환경에서 측정하고 목표 달성 여부를 검증한다.",
        "targets_line": "{clip}초 clip 목표: {targets}.",
        "targets_source": "목표 출처: {source}.",
        "no_targets": "판정 요약(summary.json)이 없어 목표 대비 판정 없이 측정값만 보고한다.",
        "no_gates": "판정 요약(summary.json)에 이 clip 길이들의 목표가 없어 판정 없이 측정값만 보고한다.",
        "no_gpu": "GPU 없음 (CPU)",
        "env": "테스트 환경 구성 — {gpu}, 드라이버 {driver}, CUDA {cuda} (드라이버 CUDA {cuda_driver}), "
               "PyTorch {torch}, TensorRT {trt}; 호스트 {host} ({cpu}).",
        "settings": "단계별 정밀도/백엔드 — {stages}.",
        "bench": "benchmark_runner 측정 — clip 길이 {clips}초, 크기 {size}, 장치 {device}, clip당 측정 {runs}회, "
                 "설정 해시 {config_hash}, 커밋 {commit}, 측정 시각 {timestamp}.",
        "engines": "엔진 빌드 — {detail}.",
        "engines_detail": "시도 {attempted}회, 성공 {succeeded}회, 캐시 적중 {hits}회, 빌드 {build_s} s",
        "per_clip": "{clip}초 clip: ",
        "verdict_overall": "종합 판정: {verdict}.",
        "result_line": "{clip}초 clip: 지연 중앙값 {p50} ms (95% CI {low}–{high} ms, {runs}회), "
                       "첫 청크 {first} ms, 처리량 {cps} clips/s (동시 {conc}), 메모리 {mem} GB{ref}.",
        "build_rate": "엔진 빌드 성공률 {rate}% ({attempted}회 중 {succeeded}회).",
        "table_results": "표 1. clip 길이별 결과와 목표",
        "table_stages": "표 2. 단계별 지연 (p50, ms)",
        "col_clip": "clip (s)",
        "col_runs": "측정 횟수",
        "col_latency": "지연 p50 (ms)",
        "col_ci": "95% CI (ms)",
        "col_latency_target": "목표 지연 (ms)",
        "col_first": "첫 청크 p50 (ms)",
        "col_first_target": "목표 첫 청크 (ms)",
        "col_cps_c1": "처리량 c=1 (clips/s)",
        "col_cps_sat": "처리량 포화 (clips/s)",
        "col_conc": "포화 동시 수",
        "col_cps_target": "목표 처리량 (clips/s)",
        "col_mem": "피크 메모리 (GB)",
        "col_mem_target": "목표 메모리 (GB)",
        "col_sm_active": "SM 사용률 (%) [sm_active_pct]",
        "col_gpu_busy": "GPU busy (%) [gpu_busy_pct, SM 사용률 아님]",
        "col_verdict": "판정",
        "col_stage_clip": "clip (s)",
        "fail": "{clip}초 clip {figure}: 측정 {measured}, 목표 {op} {target} ({statistic}{confidence}) → 미달. {reason}",
        "confidence": ", 신뢰도 {value}",
        "invalid": "{clip}초 clip {figure}: 판정 불가(INVALID) — {reason}",
        "marginal": "{clip}초 clip {figure}: MARGINAL, 최대 실행 횟수까지 신뢰구간이 목표에 걸쳐 있음 (미확정) — {reason}",
        "build_failed": "{where}엔진 빌드 실패 {failed}회 ({attempted}회 중 성공 {succeeded}회).",
        "no_problems": "목표 미달, 판정 불가, 엔진 빌드 실패 없음.",
        "plot_stages": "단계별 지연 막대그래프 (p50, clip 길이별)",
        "plot_latency": "clip 길이별 지연 (중앙값과 95% CI, 첫 청크, 목표)",
        "plot_memory": "clip 길이별 피크 메모리 (NVML, torch reserved, 목표)",
        "ref_csv": "benchmark_runner 결과 파일 {name}",
        "ref_summary": "판정 요약 {name}",
        "ref_figures": "지표 정의: docs/figures.md",
        "weekday": "월화수목금토일",
        "date_format": "{y}년 {m}월 {d}일 ({w})",
        "dirty": " (미커밋 변경 있음)",
    },
    "en": {
        "date": "📅 Date: {date}",
        "people": "✍️ Author: {author} / ✅ Reviewed by: {reviewer}",
        "stage": "🔬 Stage of research: {stage}",
        "keywords": "🏷️ Keywords: {keywords}",
        "keywords_fixed": "performance validation, inference latency, GPU memory, throughput",
        "s1": "1. Background and purpose",
        "s2": "2. Work done",
        "s3": "3. Results and figures",
        "s4": "4. Problems and resolution",
        "s5": "5. Plots",
        "refs": "References",
        "purpose": "Measure the inference latency, first-chunk latency, throughput and GPU memory of the "
                   "RVC → VALL-E X → FastPitch → Wav2Lip pipeline ({size} size) per clip length on real "
                   "hardware, and check them against the targets.",
        "targets_line": "Targets for a {clip} s clip: {targets}.",
        "targets_source": "Source of the targets: {source}.",
        "no_targets": "No verdict summary (summary.json): the measured figures are reported without verdicts.",
        "no_gates": "The verdict summary (summary.json) gates none of these clip lengths (no targets for them): "
                    "the measured figures are reported without verdicts.",
        "no_gpu": "no GPU (CPU)",
        "env": "Test environment — {gpu}, driver {driver}, CUDA {cuda} (driver CUDA {cuda_driver}), "
               "PyTorch {torch}, TensorRT {trt}; host {host} ({cpu}).",
        "settings": "Precision/backend per stage — {stages}.",
        "bench": "benchmark_runner run — clip lengths {clips} s, size {size}, device {device}, {runs} measured runs "
                 "per clip, config hash {config_hash}, commit {commit}, measured at {timestamp}.",
        "engines": "Engine builds — {detail}.",
        "engines_detail": "{attempted} attempted, {succeeded} succeeded, {hits} cache hits, {build_s} s building",
        "per_clip": "{clip} s clip: ",
        "verdict_overall": "Overall verdict: {verdict}.",
        "result_line": "{clip} s clip: median latency {p50} ms (95% CI {low}–{high} ms, {runs} runs), first chunk "
                       "{first} ms, throughput {cps} clips/s (concurrency {conc}), memory {mem} GB{ref}.",
        "build_rate": "Engine builds succeeded {rate}% ({succeeded} of {attempted}).",
        "table_results": "Table 1. Results per clip length against the targets",
        "table_stages": "Table 2. Latency by stage (p50, ms)",
        "col_clip": "clip (s)",
        "col_runs": "runs",
        "col_latency": "latency p50 (ms)",
        "col_ci": "95% CI (ms)",
        "col_latency_target": "latency target (ms)",
        "col_first": "first chunk p50 (ms)",
        "col_first_target": "first chunk target (ms)",
        "col_cps_c1": "throughput c=1 (clips/s)",
        "col_cps_sat": "throughput saturated (clips/s)",
        "col_conc": "saturating concurrency",
        "col_cps_target": "throughput target (clips/s)",
        "col_mem": "peak memory (GB)",
        "col_mem_target": "memory target (GB)",
        "col_sm_active": "SM active (%) [sm_active_pct]",
        "col_gpu_busy": "GPU busy (%) [gpu_busy_pct, not SM occupancy]",
        "col_verdict": "verdict",
        "col_stage_clip": "clip (s)",
        "fail": "{clip} s clip {figure}: measured {measured}, target {op} {target} ({statistic}{confidence}) "
                "→ missed. {reason}",
        "confidence": ", confidence {value}",
        "invalid": "{clip} s clip {figure}: cannot be decided (INVALID) — {reason}",
        "marginal": "{clip} s clip {figure}: MARGINAL, its confidence interval still straddles the target at the run cap (undecided) — {reason}",
        "build_failed": "{where}{failed} engine build(s) failed ({succeeded} of {attempted} succeeded).",
        "no_problems": "No missed target, no undecidable verdict, no failed engine build.",
        "plot_stages": "Latency by stage (p50, per clip length)",
        "plot_latency": "Latency vs clip length (median with 95% CI, first chunk, targets)",
        "plot_memory": "Peak memory vs clip length (NVML, torch reserved, target)",
        "ref_csv": "benchmark_runner results file {name}",
        "ref_summary": "verdict summary {name}",
        "ref_figures": "definitions of the figures: docs/figures.md",
        "weekday": "Mon Tue Wed Thu Fri Sat Sun",
        "date_format": "{y}-{m:02d}-{d:02d} ({w})",
        "dirty": " (with uncommitted changes)",
    },
}

STAGE_LABELS = {
    "rvc": "RVC", "vallex_prompt": "VALL-E X prompt", "vallex": "VALL-E X", "fastpitch": "FastPitch",
    "speech_mel": "speech mel", "wav2lip": "Wav2Lip",
}

FIGURE_LABELS = {
    "ko": {"latency_ms": "지연", "first_chunk_ms": "첫 청크 지연", "throughput_cps": "처리량", "peak_mem_gb": "메모리"},
    "en": {"latency_ms": "latency", "first_chunk_ms": "first-chunk latency", "throughput_cps": "throughput",
           "peak_mem_gb": "memory"},
}

FIGURE_UNITS = {"latency_ms": "ms", "first_chunk_ms": "ms", "throughput_cps": "clips/s", "peak_mem_gb": "GB"}
