"""Reading RVC model files: the exported `.pth` (`weight` + 18-item `config`), training `G_*.pth`, or a plain state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.rvc.config import SynthesizerConfig

# Entries of the official config that do not shape the inference model: the training slice
# (the exporter writes 32 even for 48k), dropout, the spectrogram width of the dropped enc_q,
# and the speaker count (taken from emb_g's rows, as the official loader does).
_IGNORED_FIELDS = ("segment_size", "p_dropout", "spec_channels", "spk_embed_dim", "content_channels")


def split_rvc_file(obj: Any, model_name: str, path: Path) -> tuple[dict[str, torch.Tensor], list | None]:
    """(state dict without `enc_q.*`, stored config list or None) of a loaded RVC file."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{model_name}: checkpoint {path} is not a dict (got {type(obj).__name__})")
    config_list = None
    if "weight" in obj and isinstance(obj["weight"], Mapping):  # exported model
        version = obj.get("version", "v1")
        if version != "v2":
            raise CheckpointError(f"{model_name}: checkpoint {path} is an RVC {version} model "
                                  f"(256-d content features); only v2 models are supported")
        if int(obj.get("f0", 1)) != 1:
            raise CheckpointError(f"{model_name}: checkpoint {path} is a model without pitch (f0 = 0); "
                                  f"only models with f0 guidance are supported")
        state = obj["weight"]
        config_list = obj.get("config")
    elif "model" in obj and isinstance(obj["model"], Mapping):  # training checkpoint
        state = obj["model"]
    else:
        state = obj
    state = {k: v for k, v in state.items() if not k.startswith("enc_q.")}
    return state, config_list


def check_stored_config(config_list: Any, expected: SynthesizerConfig, model_name: str, path: Path) -> None:
    """Refuse a file whose stored config builds a different architecture than `model_name` expects."""
    try:
        stored = SynthesizerConfig.from_list(list(config_list), content_channels=expected.content_channels)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{model_name}: checkpoint {path} has an unreadable 'config' list ({exc})") from exc
    want, got = asdict(expected), asdict(stored)
    differing = [k for k in want if k not in _IGNORED_FIELDS and want[k] != got[k]]
    if differing:
        details = ", ".join(f"{k} {_plain(got[k])} (expected {_plain(want[k])})" for k in differing[:3])
        hint = ""
        if stored.sr != expected.sr:
            hint = f"; it is a {stored.sr} Hz model, load it as rvc_v2_{stored.sr // 1000}k"
        raise CheckpointError(f"{model_name}: checkpoint {path} was exported with another config: {details}{hint}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
