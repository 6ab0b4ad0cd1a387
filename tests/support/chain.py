"""What the chain tests build the same way: the tiny chain's config, a voiced reference, the test face."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.config import PipelineConfig

DATA = Path(__file__).resolve().parents[1] / "data"
FACE = DATA / "astronaut_face.jpg"


def tiny_config(device: str = "cpu", lipsync_features: str = "fastpitch", **chunking: object) -> PipelineConfig:
    """The tiny chain on `device` in fp32, seed 0, without RVC's disk cache (each test converts its
    own voice); `chunking` sets fields of `config.chunking`. A new object per call: tests may change it."""
    cfg = PipelineConfig(size="tiny", device=device, seed=0, lipsync_features=lipsync_features)
    for stage in cfg.stages:
        cfg.stage(stage).precision = "fp32"
    cfg.rvc.options.cache = False
    for key, value in chunking.items():
        setattr(cfg.chunking, key, value)
    return cfg


def voiced_reference(seconds: float = 2.0, sr: int = 16000, pitch_hz: float = 140.0) -> Waveform:
    """A voice-like reference: a tone at `pitch_hz` with a 3 Hz syllable-rate envelope (RVC and the
    VALL-E X prompt need voiced audio, and a silent reference is refused)."""
    t = torch.arange(int(seconds * sr)) / sr
    voiced = 0.3 * torch.sin(2 * math.pi * pitch_hz * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return Waveform(voiced.float(), sr)


def voiced_samples(seconds: float = 2.0, sr: int = 16000) -> np.ndarray:
    """`voiced_reference`'s samples as float32 numpy, for writing reference files."""
    return voiced_reference(seconds, sr).samples.numpy()
