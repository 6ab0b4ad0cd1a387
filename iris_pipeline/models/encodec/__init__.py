"""EnCodec 24 kHz (facebookresearch/encodec), loadable from the official `encodec_24khz-d7cc33bc.th`.

The official file is a plain state dict in the weight-norm layout, so no name mapping is needed.
"""

from __future__ import annotations

from iris_pipeline.models.encodec.config import CONFIGS, EncodecConfig, encodec_config
from iris_pipeline.models.encodec.model import EncodecModel
from iris_pipeline.models.spec import ModelSpec


def build_encodec(size: str) -> EncodecModel:
    return EncodecModel(encodec_config(size))


SPEC = ModelSpec(name="encodec_24khz", factory=build_encodec)

__all__ = ["CONFIGS", "SPEC", "EncodecConfig", "EncodecModel", "build_encodec", "encodec_config"]
