"""Vocos on EnCodec codes (gemelo-ai/vocos, weights charactr/vocos-encodec-24khz `pytorch_model.bin`).

`load("vocos_encodec_24khz", path)` accepts the released file, which omits the inner EnCodec weights
(see `loading.py`); `load_vocos_with_encodec` also fills them from an EnCodec 24 kHz checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.models.spec import ModelSpec
from iris_pipeline.models.vocos.config import CONFIGS, VocosConfig, vocos_config
from iris_pipeline.models.vocos.loading import ENCODEC_PREFIX, load_vocos
from iris_pipeline.models.vocos.model import SIX_KBPS_ID, Vocos


def build_vocos(size: str) -> Vocos:
    return Vocos(vocos_config(size))


@dataclass(frozen=True)
class VocosSpec(ModelSpec):
    """ModelSpec whose `load` understands the released layout without the EnCodec weights."""

    def load(self, path: Path, size: str = "full") -> Vocos:
        return load_vocos(self.build, path, size)


SPEC = VocosSpec(name="vocos_encodec_24khz", factory=build_vocos)


def load_vocos_with_encodec(path: str | Path, encodec_checkpoint: str | Path, size: str = "full") -> Vocos:
    """What the official `Vocos.from_pretrained` does: the Vocos file plus the EnCodec 24 kHz weights."""
    return load_vocos(SPEC.build, path, size, encodec_checkpoint=encodec_checkpoint)


__all__ = [
    "CONFIGS", "ENCODEC_PREFIX", "SIX_KBPS_ID", "SPEC", "Vocos", "VocosConfig", "VocosSpec",
    "build_vocos", "load_vocos_with_encodec", "vocos_config",
]
