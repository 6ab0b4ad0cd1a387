"""GPU timing of the FastPitch stage: a 10 s clip of speech at 24 kHz and its script, full size, fp16.

Random (seeded) weights; the whole `FastPitchStage.run` is timed (22.05 kHz mel of the speech,
aligner + MAS on the CPU, forced-duration decoder, MelBridge), and the decoder pass alone. Each
figure is the median of >= 30 runs timed with CUDA events after warm-up.
Run: `pytest -m gpu tests/perf/test_fastpitch_gpu.py -s`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from iris_pipeline.audio import Waveform, read_audio, resample_waveform
from iris_pipeline.config import FastPitchConfig
from iris_pipeline.stages.fastpitch import FastPitchStage
from tests.support.gpu_timing import cuda_times_ms

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech_en_16k.wav"
SENTENCE = "The quick brown fox jumps over the lazy dog. "
CLIP_SECONDS = 10
WARMUP = 5
RUNS = 30


def _median_ms(fn) -> float:
    return statistics.median(cuda_times_ms(fn, warmup=WARMUP, runs=RUNS))


def _ten_second_job() -> tuple[str, Waveform]:
    one = resample_waveform(read_audio(SPEECH), 24000)
    repeats = -(-CLIP_SECONDS * 24000 // one.samples.numel())
    samples = one.samples.repeat(repeats)[: CLIP_SECONDS * 24000]
    return SENTENCE * repeats, Waveform(samples.to("cuda"), 24000)


@pytest.mark.gpu
def test_fastpitch_stage_10s_clip_fp16(record_property):
    text, speech = _ten_second_job()
    stage = FastPitchStage(FastPitchConfig(precision="fp16", device="cuda"), size="full", device="cuda")
    stage.prepare()
    out = stage.run(text=text, speech=speech)
    assert out["lipsync_mel"].shape == (80, 1 + CLIP_SECONDS * 16000 // 200)
    assert torch.isfinite(out["lipsync_mel"]).all()

    stage_ms = _median_ms(lambda: stage.run(text=text, speech=speech))
    alignment = stage.align(text, speech)
    ids = torch.tensor(alignment.text.ids, device="cuda")
    decoder_ms = _median_ms(lambda: stage.render(ids, alignment.durations))

    name = torch.cuda.get_device_name()
    record_property("fastpitch_stage_10s_fp16_median_ms", stage_ms)
    record_property("fastpitch_render_10s_fp16_median_ms", decoder_ms)
    print(f"\nfastpitch stage, {CLIP_SECONDS} s clip ({len(alignment.text.ids)} symbols, "
          f"{int(alignment.durations.sum())} frames), fp16 on {name}: median {stage_ms:.2f} ms of {RUNS}; "
          f"forced-duration render alone {decoder_ms:.2f} ms")
    assert 0 < decoder_ms <= stage_ms < 2000
