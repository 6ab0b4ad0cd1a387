"""Reading the released Vocos checkpoint, which leaves out the EnCodec model it contains.

The released `pytorch_model.bin` of charactr/vocos-encodec-24khz is a plain state dict WITHOUT the
`feature_extractor.encodec.*` entries: the official `Vocos.from_pretrained` builds a pretrained
EnCodec and copies its weights in before a strict load. Decoding codes never touches those weights
(it reads `codebook_weights`, which the file does hold), so here:

* a file without any `feature_extractor.encodec.*` entry is accepted; everything else in it must
  match exactly. The EnCodec part then comes from `encodec_checkpoint` when one is given (as the
  official loader does), else it keeps the seeded (seed 0) random init and audio encoding is refused;
* a file with EnCodec entries must hold all of them (a plain strict load);
* any other missing, unexpected or wrong-shape entry is a `CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models import encodec as encodec_package
from iris_pipeline.models.checkpoint import describe_mismatch, load_state_dict_strict, safe_torch_load
from iris_pipeline.models.vocos.model import Vocos

NAME = "vocos_encodec_24khz"
ENCODEC_PREFIX = "feature_extractor.encodec."


def _state_dict_of(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{NAME}: checkpoint {path} does not hold a state dict of tensors")
    return obj


def load_vocos(build, path: str | Path, size: str = "full",
               encodec_checkpoint: str | Path | None = None) -> Vocos:
    """Vocos from the released file (with or without EnCodec weights); `build(size, seed)` makes the model."""
    path = Path(path)
    state = _state_dict_of(safe_torch_load(path, model_name=NAME), path)
    model: Vocos = build(size=size, seed=0)
    features = model.feature_extractor
    if any(k.startswith(ENCODEC_PREFIX) for k in state):
        load_state_dict_strict(model, state, model_name=NAME, path=path)
    else:
        own = model.state_dict()
        expected = {k: v.shape for k, v in own.items() if not k.startswith(ENCODEC_PREFIX)}
        problem = describe_mismatch(expected, {k: v.shape for k, v in state.items()})
        if problem is not None:
            raise CheckpointError(
                f"{NAME}: checkpoint {path} does not match the model (released layout without "
                f"{ENCODEC_PREFIX}*; {len(state)} entries in file, {len(expected)} expected): {problem}"
            )
        filled = {k: v for k, v in own.items() if k.startswith(ENCODEC_PREFIX)}
        model.load_state_dict({**filled, **state}, strict=True)
        features.encodec_weights_loaded = False
    if encodec_checkpoint is not None:
        encodec = encodec_package.SPEC.load(Path(encodec_checkpoint), size=model.config.encodec_size)
        features.encodec.load_state_dict(encodec.state_dict(), strict=True)
        features.encodec_weights_loaded = True
    return model.eval()
