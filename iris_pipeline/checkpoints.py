"""A directory of official checkpoint files -> the config entries that load them.

`iris render --checkpoints DIR` looks for each model's file under the name its official project
publishes it with. Every model of the configured stages must be found; a missing one is an error
that lists the names looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import CheckpointError


@dataclass(frozen=True)
class CheckpointSlot:
    stage: str
    option: str | None  # None: the stage's own `checkpoint`; else the option that names the file
    model: str
    file_names: tuple[str, ...]


SLOTS: tuple[CheckpointSlot, ...] = (
    CheckpointSlot("rvc", None, "rvc_v2_40k / rvc_v2_48k voice model", ("voice.pth", "rvc/voice.pth")),
    CheckpointSlot("rvc", "hubert_checkpoint", "hubert_base", ("hubert_base.pt",)),
    CheckpointSlot("rvc", "rmvpe_checkpoint", "rmvpe", ("rmvpe.pt",)),
    CheckpointSlot("vallex", None, "vallex", ("vallex-checkpoint.pt",)),
    CheckpointSlot("vallex", "encodec_checkpoint", "encodec_24khz", ("encodec_24khz-d7cc33bc.th",)),
    CheckpointSlot("vallex", "vocos_checkpoint", "vocos_encodec_24khz",
                   ("vocos-encodec-24khz/pytorch_model.bin", "vocos_encodec_24khz.bin")),
    CheckpointSlot("fastpitch", None, "fastpitch",
                   ("nvidia_fastpitch_210824.pt", "FastPitch_checkpoint.pt", "fastpitch.pt")),
    CheckpointSlot("wav2lip", None, "wav2lip", ("wav2lip_gan.pth", "wav2lip.pth", "Wav2Lip.pth")),
    CheckpointSlot("wav2lip", "s3fd_checkpoint", "s3fd", ("s3fd.pth", "s3fd-619a316812.pth")),
)


def apply_checkpoint_dir(config: PipelineConfig, directory: str | Path) -> PipelineConfig:
    """A copy of `config` whose stages load their official files from `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"--checkpoints {directory}: not a directory")
    config = config.model_copy(deep=True)
    missing = []
    for slot in SLOTS:
        if slot.stage not in config.stages:
            continue
        found = next((directory / n for n in slot.file_names if (directory / n).is_file()), None)
        if found is None:
            missing.append(f"{slot.model} ({' or '.join(slot.file_names)})")
            continue
        stage = config.stage(slot.stage)
        if slot.option is None:
            stage.checkpoint = found
        else:
            stage.options = {**stage.options, slot.option: found}
    if missing:
        raise CheckpointError(f"--checkpoints {directory}: missing {len(missing)} file(s): {'; '.join(missing)}")
    return config


def uses_random_weights(config: PipelineConfig) -> bool:
    """True when any configured stage has no checkpoint of its own."""
    return any(config.stage(s).checkpoint is None for s in config.stages)
