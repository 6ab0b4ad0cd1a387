"""FastPitch 1.1 with its aligner (NVIDIA DeepLearningExamples, PyTorch/SpeechSynthesis/FastPitch).

Registry name `fastpitch`. The official checkpoint (`nvidia_fastpitch_210824.pt`, written by
`common/utils.py:Checkpointer.maybe_save`) is a dict with `state_dict` (keys possibly prefixed with
`module.` by DistributedDataParallel), `ema_state_dict`, `config` (the model kwargs), `train_setup`,
`optimizer`, `scaler`, `epoch`, `iteration`. Like the official `load_and_setup_model` we take
`state_dict` and strip `module.`; unlike it, we load strictly, the aligner (`attention.*`) included,
since our chain aligns with it. A bare state dict is accepted too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.checkpoint import strip_prefix
from iris_pipeline.models.fastpitch.config import CONFIGS, FULL, TINY, FastPitchConfig
from iris_pipeline.models.fastpitch.mel import FASTPITCH_MEL, FastPitchMelParams, fastpitch_mel
from iris_pipeline.models.fastpitch.model import FastPitch, FastPitchOutput, regulate_length
from iris_pipeline.models.spec import ModelSpec

# Config keys that change the architecture; a file whose `config` disagrees is refused by name.
_ARCHITECTURE_KEYS = ("n_symbols", "n_speakers", "energy_conditioning", "n_mel_channels",
                      "pitch_conditioning_formants")


def build_fastpitch(size: str) -> FastPitch:
    return FastPitch(CONFIGS[size])


def extract_state_dict(obj: Any) -> Mapping[str, Any]:
    """Official checkpoint dict (or a bare state dict) -> state dict with our names."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"fastpitch: checkpoint holds a {type(obj).__name__}, expected a dict")
    if "state_dict" not in obj:
        return strip_prefix(obj, "module.")
    config = obj.get("config")
    if isinstance(config, Mapping):
        wrong = [f"{k}={config[k]!r} (ours {getattr(FULL, k)!r})" for k in _ARCHITECTURE_KEYS
                 if k in config and config[k] != getattr(FULL, k)]
        if wrong:
            raise CheckpointError(f"fastpitch: checkpoint config differs from the released model: {', '.join(wrong)}")
    return strip_prefix(obj["state_dict"], "module.")


SPEC = ModelSpec(name="fastpitch", factory=build_fastpitch, extract_state_dict=extract_state_dict)

__all__ = ["CONFIGS", "FASTPITCH_MEL", "FULL", "SPEC", "TINY", "FastPitch", "FastPitchConfig",
           "FastPitchMelParams", "FastPitchOutput", "build_fastpitch", "extract_state_dict", "fastpitch_mel",
           "regulate_length"]
