"""Stage-specific settings: the pydantic model of each stage's `options` in the pipeline config.

Every stage's options carry its own keys plus `backend` (`BackendOptions`: engine cache, TensorRT,
compile and INT8 settings). `PipelineConfig` holds them typed, so a typo or a bad value is refused
when the config is loaded (one line naming `<stage>.options.<key>`), and `iris config show` prints
every option with its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iris_pipeline.avatar import DEFAULT_PADS, DEFAULT_SMOOTH_WINDOW
from iris_pipeline.models.rvc.inference import RMS_MIX_RATE
from iris_pipeline.models.vallex.decode import CAPACITY_BUCKETS, check_capacity_buckets


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Int8Options(_Strict):
    """Explicit INT8 (ModelOpt Q/DQ): calibration set, calibration method, the precision of the
    non-quantised rest of the graph, and the accuracy gate (None = the graph's default threshold)."""

    calibration_samples: int = Field(default=16, ge=1, le=4096)
    held_out_samples: int = Field(default=4, ge=1, le=1024)
    seed: int = 0
    method: Literal["max", "entropy"] = "max"
    high_precision: Literal["fp16", "fp32"] = "fp16"
    quantize_attention: bool = False  # Q/DQ on attention's activation x activation matmuls too
    min_cosine: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_abs_error: float | None = Field(default=None, gt=0.0)


class BackendOptions(_Strict):
    engine_dir: Path | None = None
    onnx_opset: int = Field(default=17, ge=13, le=21)
    # TensorRT
    workspace_gb: float = Field(default=4.0, gt=0.0, le=512.0)
    builder_optimization_level: int | None = Field(default=None, ge=0, le=5)
    strongly_typed: bool | None = None  # None: where the TensorRT in use supports it
    # eager
    autocast: bool = False  # fp16/bf16 by autocast (weights stay fp32) instead of casting the module
    # compile
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    compile_dynamic: bool | None = None
    compile_fullgraph: bool = False
    aot: bool = False  # compile ahead of time (AOTInductor package in the engine cache)
    int8: Int8Options = Field(default_factory=Int8Options)


class StageOptions(_Strict):
    """What every stage's options hold: the backend settings."""

    backend: BackendOptions = Field(default_factory=BackendOptions)


class RVCOptions(StageOptions):
    """`rvc.options` of the pipeline config."""

    model: Literal["rvc_v2_40k", "rvc_v2_48k"] = "rvc_v2_40k"
    pitch_shift: float = Field(default=0.0, ge=-24.0, le=24.0, description="transposition in semitones")
    index_path: Path | None = Field(default=None, description="faiss index of the voice's training features")
    index_rate: float = Field(default=0.75, ge=0.0, le=1.0, description="share of retrieved features")
    protect: float = Field(default=0.33, ge=0.0, le=0.5, description="0.5 = off; lower protects consonants more")
    speaker_id: int = Field(default=0, ge=0)
    f0_threshold: float = Field(default=0.03, gt=0.0, lt=1.0, description="RMVPE voicing threshold")
    interpolate_unvoiced_f0: bool = Field(default=False, description="2026 RVC behaviour; makes protect inert")
    rms_mix_rate: float = Field(default=RMS_MIX_RATE, ge=0.0, le=1.0,
                                description="share of the output's own loudness envelope (1 = off; "
                                            "the rest follows the reference's)")
    hubert_checkpoint: Path | None = None
    rmvpe_checkpoint: Path | None = None
    cache: bool = True
    cache_dir: Path | None = None
    cache_max_entries: int = Field(default=64, ge=1, le=100000)
    # Official chunk constants (seconds) depend on precision; these override them.
    x_pad: int | None = Field(default=None, ge=1, le=10)
    x_query: int | None = Field(default=None, ge=1)
    x_center: int | None = Field(default=None, ge=2)
    x_max: int | None = Field(default=None, ge=3)

    @model_validator(mode="after")
    def _chunk_order(self) -> RVCOptions:
        if self.x_query is not None or self.x_center is not None or self.x_max is not None:
            q, c, m = (self.x_query or 0), (self.x_center or 0), (self.x_max or 0)
            if None in (self.x_query, self.x_center, self.x_max) or not q < c < m:
                raise ValueError("x_query, x_center and x_max must be given together with x_query < x_center < x_max")
        return self


class VallexOptions(StageOptions):
    """`vallex.options` of the pipeline config."""

    top_k: int = Field(default=-100, description="<= 0: no top-k (official)")
    temperature: float = Field(default=1.0, gt=0.0, le=10.0)
    greedy: bool = Field(default=False, description="argmax instead of sampling in the AR")
    decoder: Literal["vocos", "encodec"] = "vocos"
    use_cuda_graph: bool | None = Field(
        default=None, description="replay the AR step as a CUDA graph (CUDA only); None: when the stage's "
                                  "backend is compile")
    sampling_in_graph: bool = Field(
        default=False, description="Gumbel-max draw fused into the replayed step (same distribution, "
                                   "other random stream than the official torch.multinomial)")
    max_batch: int = Field(default=16, ge=1, le=256, description="sequences decoded together")
    eos_check_every: int = Field(default=8, ge=1, le=1024)
    capacity_buckets: list[int] = Field(
        default=list(CAPACITY_BUCKETS), description="KV-cache capacities (prompt + text + new frames) a "
                                                    "decode is padded to; one CUDA graph per bucket and batch bucket")
    cache_mib: int = Field(
        default=4096, ge=1, description="budget of the decode caches in MiB (least recently used first out); "
                                        "the caches of the graphs captured up front must fit in it")
    long_text: Literal["single", "sentences"] = Field(
        default="single", description="sentences: official long-text mode (fixed prompt, one decode)")
    accent: Literal["no-accent", "en", "zh", "ja"] = "no-accent"
    max_prompt_seconds: float = Field(default=15.0, gt=0.0, description="official make_prompt limit")
    encodec_checkpoint: Path | None = None
    vocos_checkpoint: Path | None = None


    @field_validator("capacity_buckets")
    @classmethod
    def _buckets(cls, value: list[int]) -> list[int]:
        return list(check_capacity_buckets(value))


class FastPitchOptions(StageOptions):
    """`fastpitch.options` of the pipeline config."""

    model_config = ConfigDict(extra="forbid", strict=True)

    use_prior: bool = True


class Wav2LipOptions(StageOptions):
    """`wav2lip.options` of the pipeline config."""

    batch_size: int = Field(default=128, ge=1, le=4096, description="frames per generator call")
    face_detector: Literal["auto", "s3fd", "cascade"] = "auto"
    s3fd_checkpoint: Path | None = None
    face_det_batch_size: int = Field(default=16, ge=1, le=1024)
    pads: tuple[int, int, int, int] = Field(default=DEFAULT_PADS, description="top, bottom, left, right")
    smooth_window: int = Field(default=DEFAULT_SMOOTH_WINDOW, ge=1, le=100, description="1 = no smoothing")
    resize_factor: int = Field(default=1, ge=1, le=16)
    cache_dir: Path | None = None
    cache_entries: int = Field(default=16, ge=1, le=10000)
    calibration_avatar: Path | None = Field(default=None, description="INT8: avatar whose crops calibrate")
    calibration_speech: Path | None = Field(default=None, description="INT8: speech whose mel calibrates")
    calibration_fps: float = Field(default=25.0, ge=1.0, le=120.0)

    @model_validator(mode="after")
    def _calibration_pair(self) -> Wav2LipOptions:
        if (self.calibration_avatar is None) != (self.calibration_speech is None):
            raise ValueError("calibration_avatar and calibration_speech must be given together")
        return self
