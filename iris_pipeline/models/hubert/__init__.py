"""HuBERT-base content encoder (`hubert_base`) in the layout of RVC's fairseq checkpoint.

Accepted files (read with torch's weights-only unpickler, never by running pickled code):
  * the published fairseq checkpoint `hubert_base.pt` as users have it: a dict with `args` (None),
    `cfg` (plain containers), `model` (the state dict), `task_state` (fairseq label dictionaries)
    and training bookkeeping;
  * a fairseq-style dict whose `model` entry is the state dict, or a plain state dict.
The published file pickles exactly one class beyond tensors and containers,
`fairseq.data.dictionary.Dictionary` (in `task_state['dictionaries']`); it is mapped to the inert
`FairseqDictionary`, and any other class is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from iris_pipeline.models.checkpoint import InertRecord
from iris_pipeline.models.hubert.model import FULL, TINY, HubertConfig, HubertModel, conv_output_frames
from iris_pipeline.models.spec import ModelSpec


class FairseqDictionary(InertRecord):
    """fairseq's label dictionary as pickled in `task_state`: symbols, counts and special indices, as data."""


# (stand-in, the name the file pickles): the complete allow-list beyond torch's weights-only defaults
FAIRSEQ_GLOBALS = ((FairseqDictionary, "fairseq.data.dictionary.Dictionary"),)


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return obj["model"]
    return obj


SPEC = ModelSpec(
    name="hubert_base",
    factory=lambda size: HubertModel(FULL if size == "full" else TINY),
    extract_state_dict=extract_state_dict,
    safe_globals=FAIRSEQ_GLOBALS,
)

__all__ = ["FAIRSEQ_GLOBALS", "FULL", "SPEC", "TINY", "FairseqDictionary", "HubertConfig", "HubertModel",
           "conv_output_frames"]
