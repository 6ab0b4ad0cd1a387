"""The chain on tiny random weights: every valid script renders for every seed (no chunk comes out too
short to align), and the per-job state of the workers stays bounded whatever the clip's length."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris_pipeline import chunking, timebase
from iris_pipeline.chunking import benchmark_script
from iris_pipeline.errors import InputError
from iris_pipeline.pipeline import ClipTally, Job, Pipeline
from iris_pipeline.stages.fastpitch import FastPitchStage
from iris_pipeline.timebase import CODEC_RATE, video_frame_count
from tests.support.chain import FACE, tiny_config, voiced_reference

DATA = Path(__file__).resolve().parents[2] / "data"
# short sentences and phrases: with 0.6 s chunks, many chunks of a few symbols each
CHOPPY = "Hi. Go! Yes? No. OK, fine; sure: right. A, b, c. Well... then. Up! Down? Stop."


@pytest.fixture(scope="module")
def pipeline():
    pipe = Pipeline(tiny_config(chunk_seconds=0.6, first_chunk_seconds=None))
    pipe.prepare()
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def avatar(pipeline):
    return pipeline.prepare_avatar(FACE)


def test_chunk_minimums_cover_the_aligner_and_one_wav2lip_window(pipeline):
    texts = [c.text for c in chunking.plan_chunks(CHOPPY, "en", chunk_seconds=0.6).chunks]
    assert len(texts) >= 8
    for text, frames in zip(texts, pipeline._min_chunk_frames(texts), strict=True):
        seconds = frames / (CODEC_RATE / 320)
        assert seconds >= FastPitchStage.min_speech_seconds(text) and seconds >= timebase.MEL_WINDOW_SECONDS


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_a_choppy_script_renders_for_every_seed(pipeline, avatar, seed):
    """Random weights stop VALL-E X anywhere; each chunk must still be long enough for its text."""
    job = Job(text=CHOPPY, language="en", reference=voiced_reference(), transcript="a short reference",
              avatar=avatar, seed=seed)
    tally = ClipTally(pipeline.submit(job))
    for chunk in tally.handle.chunks(timeout=600):
        tally.add(chunk)
    assert tally.chunks >= 8 and tally.frames == video_frame_count(tally.samples, CODEC_RATE, 25)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])
def test_a_30_second_script_without_seconds_renders(avatar, seed):
    """The issue's case: a valid 30 s script, no --seconds, seeds 0 and 2 (default chunking)."""
    pipe = Pipeline(tiny_config())
    pipe.prepare()
    try:
        job = Job(text=benchmark_script(30, "en"), language="en", reference=voiced_reference(),
                  transcript="a short reference", avatar=avatar, seed=seed)
        result = pipe.render(job, timeout=900)
    finally:
        pipe.close()
    assert result.chunks >= 3 and result.frames.shape[0] == video_frame_count(
        result.speech.samples.shape[0], CODEC_RATE, 25)


def test_seconds_too_short_for_the_text_is_refused_before_any_work(pipeline, avatar):
    with pytest.raises(InputError, match="too short for the text"):
        pipeline.check_job(Job(text=CHOPPY, language="en", reference=voiced_reference(), transcript="t",
                               avatar=avatar, seconds=0.5))


@pytest.mark.parametrize("mode", ["fastpitch", "speech"])
def test_lipsync_state_stays_bounded_in_clip_length(avatar, mode):
    """The lipsync worker keeps only the mel columns and audio that frames still to come need: at
    most about one chunk's worth, not the clip so far."""
    pipe = Pipeline(tiny_config(lipsync_features=mode, chunk_seconds=1.0, first_chunk_seconds=None))
    held: list[tuple[int, int]] = []

    def watch(event) -> None:
        for state in list(pipe._lipsync_state.values()):
            mel = 0 if state.mel is None else state.mel.shape[1]
            audio = 0 if state.audio is None else state.audio.shape[0]
            held.append((mel, audio))

    pipe._on_progress = watch
    pipe.prepare()
    try:
        seconds = 12.0
        result = pipe.render(Job(text=benchmark_script(seconds, "en"), language="en", reference=voiced_reference(),
                                 transcript="a short reference", avatar=avatar, seconds=seconds), timeout=900)
    finally:
        pipe.close()
    assert result.chunks >= 8 and held
    chunk_columns = 80 * 1.0 * 2  # the planner's 1 s chunks, twice over for the longest one
    assert max(m for m, _ in held) <= chunk_columns + timebase.MEL_WINDOW, held
    assert max(a for _, a in held) <= CODEC_RATE * 2.0, held
    assert pipe._lipsync_state == {}
