"""Reference forms of the chunking code that only tests use: the whole clip stitched at once, and
the mel of a prefix from column 0.
Production streams through `chunking.AudioStitcher` and `chunking.wav2lip_mel_columns` instead."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from iris_pipeline.chunking import AudioStitcher, StitchLayout, wav2lip_mel_columns


def stitch_audio(chunks: Sequence[torch.Tensor], overlap: int) -> torch.Tensor:
    """Join chunk waveforms with equal-power cross-fades; length `StitchLayout.total_length` exactly."""
    layout = StitchLayout(tuple(c.shape[0] for c in chunks), overlap)
    stitcher = AudioStitcher(overlap)
    parts = [stitcher.push(c, last=(k == len(chunks) - 1)) for k, c in enumerate(chunks)]
    out = torch.cat(parts)
    assert out.shape[0] == layout.total_length
    return out


def wav2lip_mel_prefix(prefix: torch.Tensor, sample_rate: int,
                       total_samples: int | None = None) -> torch.Tensor:
    """[80, R]: the first R = `mel_columns_ready(len(prefix), ...)` columns of the whole clip's
    `audio.wav2lip_mel`, computed from its first samples only (equal up to float rounding).

    `total_samples` = the clip's length when known; a prefix that is the whole clip gives all columns.
    """
    return wav2lip_mel_columns(prefix, sample_rate, 0, total_samples)
