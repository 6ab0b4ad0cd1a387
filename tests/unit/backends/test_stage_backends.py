"""Every stage selects its backend and precision through `backends.prepare_graph` (tiny models, CPU).

- Wav2Lip and FastPitch: eager is today's computation, compile matches eager, tensorrt says why it
  cannot run here; Wav2Lip's INT8 calibration set is recorded from the stage's own inputs and passes
  the fake-quant accuracy gate in onnxruntime.
- VALL-E X and RVC refuse tensorrt with one line; RVC's compile matches eager (slow: inductor).
- Bad `options.backend` keys are one-line ConfigErrors naming `<stage>.options.backend.<key>`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iris_pipeline.audio import read_audio, wav2lip_mel
from iris_pipeline.backends import BackendOptions, Int8Options, prepare_graph
from iris_pipeline.backends.accuracy import accuracy_gate
from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason
from iris_pipeline.config import (
    FastPitchConfig,
    RVCConfig,
    StageConfig,
    VallexConfig,
    Wav2LipConfig,
    parse_pipeline_config,
)
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.stages.fastpitch import FastPitchStage
from iris_pipeline.stages.rvc import RVCStage
from iris_pipeline.stages.vallex import VallexStage
from iris_pipeline.stages.wav2lip import Wav2LipStage
from iris_pipeline.text.fastpitch_en import encode

DATA = Path(__file__).resolve().parents[2] / "data"
PHOTO = DATA / "astronaut_face.jpg"
SPEECH = DATA / "speech_en_16k.wav"
TEXT = "The quick brown fox jumps over the lazy dog."
TRT_REASON = tensorrt_unavailable_reason("cuda")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small CPU ops, one thread


def _wav2lip(tmp_path: Path, backend: str = "eager", precision: str = "fp32", **options) -> Wav2LipStage:
    options = {"batch_size": 4, "cache_dir": str(tmp_path / "avatars"), **options}
    stage = Wav2LipStage(Wav2LipConfig(precision=precision, backend=backend, options=options), size="tiny")
    stage.prepare()
    return stage


def _fastpitch(backend: str = "eager", precision: str = "fp32") -> FastPitchStage:
    stage = FastPitchStage(FastPitchConfig(precision=precision, backend=backend), size="tiny")
    stage.prepare()
    return stage


def _symbols_and_durations(n_frames: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(encode(TEXT).ids)
    durations = torch.full_like(ids, n_frames // len(ids))
    durations[: n_frames - int(durations.sum())] += 1
    return ids, durations


@pytest.fixture(scope="module")
def wav2lip_eager(tmp_path_factory) -> Wav2LipStage:
    return _wav2lip(tmp_path_factory.mktemp("w2l"))


@pytest.fixture(scope="module")
def avatar(wav2lip_eager):
    return wav2lip_eager.prepare_avatar(PHOTO, fps=25.0)


@pytest.fixture(scope="module")
def speech_mel() -> torch.Tensor:
    speech = read_audio(SPEECH, "speech")
    return wav2lip_mel(speech.samples, speech.sample_rate)


# -- Wav2Lip -----------------------------------------------------------------------------------------


def test_wav2lip_eager_is_the_plain_generator(wav2lip_eager, avatar, speech_mel):
    stage = wav2lip_eager
    assert stage.generator.describe()["backend"] == "eager"
    mel, faces = stage.record_inputs(speech_mel, avatar, fps=25.0, samples=1, batch=4)[0]
    with torch.no_grad():
        expected = stage.model(mel, faces)
    assert torch.equal(stage.generator(mel, faces), expected)


def test_wav2lip_compile_matches_eager(tmp_path, wav2lip_eager, avatar, speech_mel):
    compiled = _wav2lip(tmp_path, backend="compile")
    assert compiled.generator.describe()["backend"] == "compile"
    total = speech_mel.shape[1]
    inputs = dict(mel=speech_mel, mel_offset=0, total_mel_frames=total, avatar=avatar, frame_start=0,
                  frame_count=8, fps=25.0)
    eager_frames = wav2lip_eager.run(**inputs)["frames"].int()
    compiled_frames = compiled.run(**inputs)["frames"].int()
    assert (eager_frames - compiled_frames).abs().max() <= 1  # one grey level of rounding at most


def test_wav2lip_batch_size_widens_the_engine_profile(tmp_path):
    stage = Wav2LipStage(Wav2LipConfig(precision="fp32", options={"batch_size": 24}), size="tiny")
    stage.prepare()
    assert stage.graph_spec().profile.ranges["batch"] == (1, 4, 24)  # tiny default max is 8


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are present: the GPU test below runs")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_wav2lip_tensorrt_without_tensorrt_is_one_clear_line(tmp_path, precision):
    with pytest.raises(ConfigError, match="wav2lip.backend: tensorrt is not usable here") as info:
        _wav2lip(tmp_path, backend="tensorrt", precision=precision)
    assert "\n" not in str(info.value)


def test_wav2lip_int8_calibration_from_recorded_inputs_passes_the_fake_quant_gate(
    wav2lip_eager, avatar, speech_mel, cached_onnx
):
    """INT8 on a CPU: the backends package fake-quantises in onnxruntime (TensorRT needs a GPU). The
    calibration and held-out batches are the stage's own inputs for frames of a real speech."""
    options = BackendOptions(int8=Int8Options(calibration_samples=6, held_out_samples=3, seed=0))
    count = options.int8.calibration_samples + options.int8.held_out_samples
    recorded = wav2lip_eager.record_inputs(speech_mel, avatar, fps=25.0, samples=count, batch=4, seed=0)
    again = wav2lip_eager.record_inputs(speech_mel, avatar, fps=25.0, samples=count, batch=4, seed=0)
    assert all(torch.equal(a, b) for x, y in zip(recorded, again, strict=True) for a, b in zip(x, y, strict=True))
    spec = wav2lip_eager.graph_spec(recorded)
    cached = cached_onnx(spec, "int8", options)
    saved = torch.load(cached.entry.file("calibration.pt"), weights_only=True)
    assert any(torch.equal(saved["calibration"][0][1], r[1]) for r in recorded)  # drawn from the recording
    accuracy = cached.entry.info["accuracy_fake_quant"]
    gate = accuracy_gate(spec, options.int8)
    print(f"\nwav2lip tiny int8 (recorded calibration) vs fp32: cosine min {accuracy['min_cosine']:.5f}, "
          f"max |err| {accuracy['max_abs_error']:.4g}")
    assert accuracy["min_cosine"] >= gate.min_cosine and accuracy["max_abs_error"] <= gate.max_abs_error


def test_wav2lip_calibration_paths_go_together(tmp_path):
    with pytest.raises(ConfigError, match="calibration_avatar and calibration_speech") as info:
        parse_pipeline_config({"wav2lip": {"options": {"calibration_avatar": str(PHOTO)}}})
    assert "\n" not in str(info.value)


# -- FastPitch ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastpitch_eager() -> FastPitchStage:
    return _fastpitch()


def test_fastpitch_eager_render_is_infer_bit_for_bit(fastpitch_eager):
    ids, durations = _symbols_and_durations()
    out = fastpitch_eager.model.infer(ids[None], durations=durations[None], pace=1.0)
    expected = out.mel[0, :, : int(out.mel_lengths[0])].float()
    mel = fastpitch_eager.render(ids, durations)
    assert mel.shape == (80, int(durations.sum()))
    assert torch.equal(mel, expected)


def test_fastpitch_compile_matches_eager(fastpitch_eager):
    compiled = _fastpitch("compile")
    assert compiled.encoder.backend == compiled.decoder.backend == "compile"
    ids, durations = _symbols_and_durations()
    torch.testing.assert_close(compiled.render(ids, durations), fastpitch_eager.render(ids, durations),
                               atol=1e-4, rtol=1e-4)


def test_fastpitch_half_precision_positions_count_past_2048():
    """The decoder computes positions in fp32 whatever its dtype (half precision cannot tell 2048 from
    2049, and a half `arange` is what broke the fp16 export), then casts the embedding."""
    stage = FastPitchStage(FastPitchConfig(precision="bf16"), size="tiny")
    stage.prepare()
    seen = []
    hook = stage.model.decoder.pos_emb.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    frames = 2100
    regulated = torch.zeros(1, frames, stage.model.config.symbols_embedding_dim)
    with torch.no_grad():
        mel = stage.decoder(regulated, torch.tensor([frames]))
    hook.remove()
    positions, table = seen[0]
    assert positions.dtype == torch.float32 and int(positions[-1]) == frames - 1
    assert not torch.equal(table[0, 2048], table[0, 2049])
    assert mel.dtype == torch.bfloat16 and mel.shape == (1, 80, frames)


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are present: the GPU test below runs")
def test_fastpitch_tensorrt_without_tensorrt_is_one_clear_line():
    stage = FastPitchStage(FastPitchConfig(precision="fp16", backend="tensorrt"), size="tiny")
    with pytest.raises(ConfigError, match="backend 'tensorrt' is not usable here") as info:
        stage.prepare()
    assert "\n" not in str(info.value)


def test_fastpitch_speech_mode_prepares_no_graphs():
    stage = FastPitchStage(FastPitchConfig(precision="fp32", backend="tensorrt"), size="tiny",
                           lipsync_features="speech")
    stage.prepare()  # nothing to render: no engine is asked for
    assert stage.encoder is None and stage.decoder is None


# -- TensorRT on a GPU (the users' runner) ------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(TRT_REASON is not None, reason=f"stage TensorRT engines: {TRT_REASON}")
def test_stages_tensorrt_fp16_match_fp32(tmp_path):
    options = {"backend": {"engine_dir": str(tmp_path / "engines")}}
    w2l = Wav2LipStage(Wav2LipConfig(precision="fp16", backend="tensorrt", options=options), size="tiny",
                       device="cuda")
    w2l.prepare()
    reference = Wav2LipStage(Wav2LipConfig(precision="fp32"), size="tiny", device="cuda")
    reference.prepare()
    mel, faces = w2l.graph_spec().example_inputs("opt", seed=3)
    torch.testing.assert_close(w2l.generator(mel, faces).float(), reference.generator(mel, faces),
                               atol=2e-2, rtol=0)
    fp = FastPitchStage(FastPitchConfig(precision="fp16", backend="tensorrt", options=options), size="tiny",
                        device="cuda")
    fp.prepare()
    fp32 = FastPitchStage(FastPitchConfig(precision="fp32"), size="tiny", device="cuda")
    fp32.prepare()
    ids, durations = _symbols_and_durations()
    torch.testing.assert_close(fp.render(ids, durations), fp32.render(ids, durations), atol=0.25, rtol=0)
    with pytest.raises(InputError, match="outside the"):
        fp.render(torch.cat([ids] * 2), torch.cat([durations] * 2))  # 88 symbols > the tiny profile's 48


# -- VALL-E X and RVC --------------------------------------------------------------------------------


def test_vallex_refuses_tensorrt():
    with pytest.raises(ConfigError) as info:
        VallexStage(VallexConfig(backend="tensorrt"), size="tiny")
    assert str(info.value) == (
        "vallex.backend: tensorrt is not supported for the autoregressive decode; use eager or compile"
    )


@pytest.mark.parametrize("backend, cuda_graph", [("eager", False), ("compile", True)])
def test_vallex_backend_chooses_the_cuda_graph_step(backend, cuda_graph):
    stage = VallexStage(VallexConfig(precision="fp32", backend=backend), size="tiny")
    stage.prepare()
    # the CUDA-graph step needs CUDA: on the CPU both decode eagerly
    assert stage.decoder.use_cuda_graph is (cuda_graph and stage.device.type == "cuda")


def test_rvc_refuses_tensorrt():
    with pytest.raises(ConfigError, match=r"^rvc.backend: tensorrt is not supported for RVC .*; use eager or compile$"):
        RVCStage(RVCConfig(backend="tensorrt"), size="tiny")


@pytest.mark.slow  # inductor compiles HuBERT, the text encoder, the flow and the NSF decoder: ~70 s on 1 core
def test_rvc_compile_matches_eager(tmp_path):
    from tests.unit.rvc.test_rvc_stage import voice_like

    reference = voice_like(1.5, 16000)
    outputs = []
    for backend in ("eager", "compile"):
        stage = RVCStage(RVCConfig(precision="fp32", backend=backend, options={"cache": False}), size="tiny")
        stage.prepare()
        outputs.append(stage.convert(reference).samples)
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=0)


# -- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage, options, fragment",
    [
        ("wav2lip", {"backend": {"workspace": 4}}, "wav2lip.options.backend.workspace: unknown option"),
        ("fastpitch", {"backend": {"compile_mode": "fast"}}, "fastpitch.options.backend.compile_mode"),
        ("vallex", {"backend": {"int8": {"seed": "x"}}}, "vallex.options.backend.int8.seed"),
        ("rvc", {"backend": []}, "rvc.options.backend: Input should be a valid dictionary"),
        ("wav2lip", {"batch": 4}, "wav2lip.options.batch: unknown option"),
    ],
)
def test_bad_backend_options_are_one_line_config_errors(stage, options, fragment):
    with pytest.raises(ConfigError) as info:
        parse_pipeline_config({stage: {"options": options}})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_backend_options_reach_the_graph():
    config = FastPitchConfig(precision="bf16", backend="eager", options={"backend": {"autocast": True}})
    stage = FastPitchStage(config, size="tiny")
    stage.prepare()
    assert next(stage.model.parameters()).dtype == torch.float32  # autocast keeps fp32 weights
    ids, durations = _symbols_and_durations()
    assert stage.render(ids, durations).shape == (80, int(durations.sum()))
    plain = prepare_graph(stage.decoder_spec, StageConfig(precision="fp32"), stage="fastpitch", device="cpu")
    assert plain.describe()["dtype"] == "torch.float32"


def test_wav2lip_int8_calibration_set_comes_from_the_configured_avatar_and_speech(tmp_path):
    options = {"batch_size": 4, "cache_dir": str(tmp_path), "calibration_avatar": str(PHOTO),
               "calibration_speech": str(SPEECH),
               "backend": {"int8": {"calibration_samples": 3, "held_out_samples": 2, "seed": 5}}}
    stage = Wav2LipStage(Wav2LipConfig(precision="fp32", options=options), size="tiny")
    stage.prepare()
    recorded = stage.calibration_inputs()
    assert stage.calibration_source == "recorded" and len(recorded) == 5
    mel, faces = recorded[0]
    assert mel.shape == (4, 1, 80, 16) and faces.shape == (4, 6, 96, 96)  # the tiny profile's "opt" batch
    assert torch.all(faces[:, :3, 48:] == 0) and faces[:, 3:].std() > 0.05  # masked target, real reference
    assert torch.equal(stage.calibration_inputs()[4][0], recorded[4][0])  # seeded
    assert _wav2lip(tmp_path).calibration_inputs() is None  # no sources: the backend's synthetic set
