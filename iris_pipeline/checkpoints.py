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
    registry_names: tuple[str, ...]  # `models` registry names loading this file (their errors start "name:")


SLOTS: tuple[CheckpointSlot, ...] = (
    CheckpointSlot("rvc", None, "rvc_v2_40k / rvc_v2_48k voice model", ("voice.pth", "rvc/voice.pth"),
                   ("rvc_v2_40k", "rvc_v2_48k")),
    CheckpointSlot("rvc", "hubert_checkpoint", "hubert_base", ("hubert_base.pt",), ("hubert_base",)),
    CheckpointSlot("rvc", "rmvpe_checkpoint", "rmvpe", ("rmvpe.pt",), ("rmvpe",)),
    CheckpointSlot("vallex", None, "vallex", ("vallex-checkpoint.pt",), ("vallex",)),
    CheckpointSlot("vallex", "encodec_checkpoint", "encodec_24khz", ("encodec_24khz-d7cc33bc.th",),
                   ("encodec_24khz",)),
    CheckpointSlot("vallex", "vocos_checkpoint", "vocos_encodec_24khz",
                   ("vocos-encodec-24khz/pytorch_model.bin", "vocos_encodec_24khz.bin"), ("vocos_encodec_24khz",)),
    CheckpointSlot("fastpitch", None, "fastpitch",
                   ("nvidia_fastpitch_210824.pt", "FastPitch_checkpoint.pt", "fastpitch.pt"), ("fastpitch",)),
    CheckpointSlot("wav2lip", None, "wav2lip", ("wav2lip_gan.pth", "wav2lip.pth", "Wav2Lip.pth"), ("wav2lip",)),
    CheckpointSlot("wav2lip", "s3fd_checkpoint", "s3fd", ("s3fd.pth", "s3fd-619a316812.pth"), ("s3fd",)),
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
            setattr(stage.options, slot.option, found)
    if missing:
        raise CheckpointError(f"--checkpoints {directory}: missing {len(missing)} file(s): {'; '.join(missing)}")
    return config


def uses_random_weights(config: PipelineConfig) -> bool:
    """True when a model the configured stages run has no checkpoint (its weights are random).

    Not counted: S3FD (without it faces are found by the bundled cascade, not by random weights) and
    Vocos when VALL-E X decodes with EnCodec (then Vocos is not loaded).
    """
    for slot in SLOTS:
        if slot.stage not in config.stages or slot.model == "s3fd":
            continue
        if slot.model == "vocos_encodec_24khz" and config.vallex.options.decoder != "vocos":
            continue
        if slot_path(config, slot) is None:
            return True
    return False


def slot_path(config: PipelineConfig, slot: CheckpointSlot) -> Path | None:
    """The file `config` gives for `slot`, if any."""
    stage = config.stage(slot.stage)
    value = stage.checkpoint if slot.option is None else getattr(stage.options, slot.option)
    return Path(value) if value is not None else None


def naming_the_file(error: CheckpointError, config: PipelineConfig) -> CheckpointError:
    """`error` with the checkpoint file's path in front when its message does not name the file.

    Some layout errors ("vallex: checkpoint has no 'model' entry") are raised before the loader
    knows the path; the model name their message starts with tells which configured file it was.
    """
    message = str(error)
    model = message.split(":", 1)[0].strip()
    for slot in SLOTS:
        if model in slot.registry_names and slot.stage in config.stages:
            path = slot_path(config, slot)
            if path is not None and str(path) not in message:
                return CheckpointError(f"{path}: {message}")
    return error
