"""RVC v2 synthesizers with f0 (`rvc_v2_40k`, `rvc_v2_48k`): `SynthesizerTrnMs768NSFsid`, official layout.

`load` reads an exported RVC model (`{'weight', 'config', 'info', 'sr', 'f0', 'version'}`, fp16
tensors cast on load), a training checkpoint (`{'model': ...}`, `enc_q` dropped) or a plain state
dict, strictly. The config stored in an exported file must describe the requested model
(a 48k file is refused by `rvc_v2_40k`); the speaker count comes from the file's `emb_g`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from iris_pipeline.models.checkpoint import load_state_dict_strict, safe_torch_load
from iris_pipeline.models.rvc.checkpoint import check_stored_config, split_rvc_file
from iris_pipeline.models.rvc.config import FULL_CONFIGS, SynthesizerConfig, synthesizer_config
from iris_pipeline.models.rvc.pitch import F0_MAX, F0_MIN, coarse_pitch
from iris_pipeline.models.rvc.synthesizer import PRIOR_NOISE_SCALE, SynthesizerTrnMs768NSFsid
from iris_pipeline.models.spec import ModelSpec


@dataclass(frozen=True)
class RVCModelSpec(ModelSpec):
    """A `ModelSpec` whose `load` also reads and checks the config stored in an exported model."""

    def load(self, path: Path, size: str = "full") -> torch.nn.Module:
        path = Path(path)
        obj = safe_torch_load(path, model_name=self.name)
        state, config_list = split_rvc_file(obj, self.name, path)
        config = synthesizer_config(self.name, size)
        if config_list is not None:
            check_stored_config(config_list, config, self.name, path)
        speakers = state.get("emb_g.weight")
        if isinstance(speakers, torch.Tensor) and speakers.dim() == 2:
            config = config.with_speakers(int(speakers.shape[0]))
        model = SynthesizerTrnMs768NSFsid(config)
        load_state_dict_strict(model, state, model_name=self.name, path=path)
        return model.eval()


def _factory(name: str):
    return lambda size: SynthesizerTrnMs768NSFsid(synthesizer_config(name, size))


def export_file_dict(model: SynthesizerTrnMs768NSFsid, info: str = "", half: bool = True) -> dict:
    """The dict RVC's exporter writes for `model` (fp16 weights, the 18-item config list)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    return {"weight": state, "config": model.config.to_list(), "info": info,
            "sr": f"{model.config.sr // 1000}k", "f0": 1, "version": "v2"}


SPECS: dict[str, ModelSpec] = {name: RVCModelSpec(name=name, factory=_factory(name)) for name in FULL_CONFIGS}

__all__ = ["F0_MAX", "F0_MIN", "PRIOR_NOISE_SCALE", "SPECS", "SynthesizerConfig", "SynthesizerTrnMs768NSFsid",
           "coarse_pitch", "export_file_dict", "synthesizer_config"]
