"""Regenerate the audio/video parity fixtures under tests/data/parity/ by running the official code.

Every expected value comes from the official implementation, run from a checkout outside this
repository; nothing here is computed by iris_pipeline (it only supplies the narrow synthesizer's
constructor arguments, RVC's 18-item config list). Weights are not stored: the official
networks get `tests.support.parity.seeded_weights(state_dict, seed)`, which the tests rebuild for our
networks (same names and shapes, same numbers).

    git -C <mirror> archive <commit> | tar -x -C /tmp/Wav2Lip     (likewise the RVC WebUI)
    pip install --target /tmp/deps tqdm transformers   (scratch: what the official code imports
                                                         beyond this project's environment)
    PYTHONPATH=.:/tmp/deps python tools/parity/official_av.py --wav2lip /tmp/Wav2Lip --rvc /tmp/rvc

The S3FD weights are written into the Wav2Lip checkout (where its detector looks for `s3fd.pth`).

Official commits used (written into tests/data/parity/official_av.json):
  Rudrabha/Wav2Lip                                  5c90fa9b4a2c2a37d0b4ebf7633ac41534eb9941
  RVC-Project/Retrieval-based-Voice-Conversion-WebUI 4338f12c3c28c80b3ac015e2d0df66c41592746d

What runs, per fixture:
  s3fd_frame.npz      Wav2Lip's `face_detection.FaceAlignment(...).get_detections_for_batch` on one
                      OpenCV (BGR) frame, S3FD with seeded weights: the network input it builds and
                      the box it returns.
  wav2lip_mel.npz     Wav2Lip's `audio.melspectrogram` of 1.5 s of tests/data/speech_en_16k.wav, and
                      `audio.load_wav(path, 16000)` + `melspectrogram` of the same speech stored at
                      24 kHz (librosa's default resampler). Two shims for librosa 0.11 (the release
                      pins 0.7.0, which no longer installs): `filters.mel` takes its arguments by
                      keyword now, and `stft` pads by reflection as 0.7 did (0.10 changed the default
                      to zeros).
  wav2lip_paste.npz   The paste-back statements of Wav2Lip's `inference.py` main loop (taken from the
                      file with `ast` and run as they are) on a seeded generator output and frame.
  wav2lip_frames.json The mel-chunk loop of `inference.py` (taken with `ast`, run as is): how many
                      frames the official clip has for mel lengths T and frame rates.
  rmvpe_f0.npz        RVC's `infer.rmvpe.RMVPE(...).infer_from_audio` on 1.3 s of speech (seeded
                      weights, CPU, fp32).
  rvc_conversion.npz  RVC's `infer.vc.pipeline.Pipeline.pipeline` (fp32 constants x_pad 1, x_query 6,
                      x_center 38, x_max 41; RMVPE; no index; protect 0.33; rms_mix_rate 0.25; no
                      output resampling) converting 1.5 s of speech, with the official RMVPE (full,
                      seeded), the official transformers HuBERT class (`infer.hubert.
                      HubertModelWithFinalProj`) and `SynthesizerTrnMs768NSFsid`, both narrow (one
                      768-d layer; synthesizer widths 16) with seeded weights; RMVPE loaded
                      beforehand, then torch.manual_seed just before the call (the prior and NSF
                      noise). HuBERT's weights are seeded by their
                      fairseq names (the transformers -> fairseq name map below). The transformers
                      HuBERT needs `transformers` (scratch install); `parselmouth` (the "pm" f0
                      method, not used) is replaced by an empty module.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity"
SPEECH = REPO / "tests" / "data" / "speech_en_16k.wav"
COMMITS = {
    "Rudrabha/Wav2Lip": "5c90fa9b4a2c2a37d0b4ebf7633ac41534eb9941",
    "RVC-Project/Retrieval-based-Voice-Conversion-WebUI": "4338f12c3c28c80b3ac015e2d0df66c41592746d",
}
S3FD_SEED, RMVPE_SEED, HUBERT_SEED, SYNTH_SEED, NOISE_SEED = 3, 5, 6, 7, 8
# The narrow HuBERT of the conversion fixture, in transformers' config terms (our HubertConfig in the test)
NARROW_HUBERT = dict(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=128,
                     conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                     classifier_proj_size=16, feat_extract_norm="group", do_stable_layer_norm=False,
                     conv_bias=False, mask_time_prob=0.0)
# transformers HubertModel name pieces -> fairseq's (RVC's hubert_base.pt), applied in order
HF_TO_FAIRSEQ = [(".conv.weight", ".0.weight"), ("conv_layers.0.layer_norm.", "conv_layers.0.2."),
                 ("feature_projection.layer_norm.", "layer_norm."),
                 ("feature_projection.projection.", "post_extract_proj."),
                 ("pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv.0.weight_g"),
                 ("pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv.0.weight_v"),
                 ("pos_conv_embed.conv.bias", "pos_conv.0.bias"), (".attention.", ".self_attn."),
                 (".layer_norm.", ".self_attn_layer_norm."), ("feed_forward.intermediate_dense.", "fc1."),
                 ("feed_forward.output_dense.", "fc2.")]
FRAME_COUNT_CASES = [(t, fps) for t in (16, 17, 95, 96, 97, 401, 801, 1203) for fps in (25.0, 29.97, 30.0, 24.0, 60.0)]


def official_statements(path: Path, first: str, last: str) -> str:
    """Source of consecutive statements of `path`: from the statement that starts with `first` to the
    first one after it, in the same block, that contains `last`; dedented, to be run as they are."""
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        block = getattr(node, "body", None)
        if not isinstance(block, list):
            continue
        texts = [ast.get_source_segment(source, n) for n in block]
        starts = [i for i, t in enumerate(texts) if t.startswith(first)]
        if starts:
            stop = next(i for i in range(starts[0], len(texts)) if last in texts[i])
            lines = source.splitlines()[block[starts[0]].lineno - 1: block[stop].end_lineno]
            return textwrap.dedent("\n".join(lines))
    raise LookupError(f"{path}: no statement starts with {first!r}")


def s3fd_fixture(wav2lip: Path) -> None:
    import cv2

    from tests.support.parity import seeded_weights

    sys.path.insert(0, str(wav2lip))
    from face_detection.detection.sfd.net_s3fd import s3fd

    weights = wav2lip / "face_detection" / "detection" / "sfd" / "s3fd.pth"
    torch.save(seeded_weights(s3fd().state_dict(), S3FD_SEED), weights)
    import face_detection

    detector = face_detection.FaceAlignment(face_detection.LandmarksType._2D, flip_input=False, device="cpu")
    seen = []
    detector.face_detector.face_detector.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    frame_bgr = cv2.resize(cv2.imread(str(REPO / "tests" / "data" / "astronaut_face.jpg")), (96, 80),
                           interpolation=cv2.INTER_AREA)
    (box,) = detector.get_detections_for_batch(np.array([frame_bgr]))
    assert box is not None, "no face with these weights: pick another seed"
    np.savez_compressed(OUT / "s3fd_frame.npz", frame_bgr=frame_bgr, network_input=seen[0].numpy(),
                        box=np.array(box), seed=S3FD_SEED)


def wav2lip_mel_fixture(wav2lip: Path) -> None:
    import librosa
    import soundfile

    original_mel, original_stft = librosa.filters.mel, librosa.stft
    librosa.filters.mel = lambda sr, n_fft, n_mels, fmin, fmax: original_mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    librosa.stft = lambda **kw: original_stft(**{"pad_mode": "reflect", **kw})
    try:
        sys.path.insert(0, str(wav2lip))
        import audio

        speech, rate = soundfile.read(str(SPEECH), dtype="float32")
        clip = speech[: int(1.5 * rate)]
        at_24k = librosa.resample(clip, orig_sr=rate, target_sr=24000)  # a 24 kHz file, as VALL-E X writes
        path_24k = Path("/tmp") / "parity_speech_24k.wav"
        soundfile.write(str(path_24k), at_24k, 24000, subtype="FLOAT")
        mel_from_24k = audio.melspectrogram(audio.load_wav(str(path_24k), 16000))
        np.savez_compressed(OUT / "wav2lip_mel.npz", speech_16k=clip, mel_16k=audio.melspectrogram(clip),
                            speech_24k=at_24k, mel_from_24k=mel_from_24k)
    finally:
        librosa.filters.mel, librosa.stft = original_mel, original_stft


def wav2lip_paste_fixture(wav2lip: Path) -> None:
    import cv2

    code = official_statements(wav2lip / "inference.py", "pred = pred.cpu()", "out.write(f)")
    gen = torch.Generator().manual_seed(7)
    pred = torch.sigmoid(3 * torch.randn(2, 3, 96, 96, generator=gen))  # the generator's output, BGR
    frames = [torch.randint(0, 256, (120, 110, 3), generator=gen, dtype=torch.uint8).numpy() for _ in range(2)]
    coords = [(20, 97, 15, 88), (5, 118, 0, 107)]  # y1, y2, x1, x2
    written = []
    scope = {"pred": pred, "frames": [f.copy() for f in frames], "coords": coords, "np": np, "cv2": cv2,
             "out": type("Writer", (), {"write": lambda self, f: written.append(f.copy())})()}
    exec(code, scope)
    np.savez_compressed(OUT / "wav2lip_paste.npz", pred=pred.numpy(), frames=np.stack(frames),
                        coords=np.array(coords), pasted=np.stack(written))


def wav2lip_frames_fixture(wav2lip: Path) -> None:
    code = official_statements(wav2lip / "inference.py", "mel_chunks = []", "mel_chunks.append(mel[:, start_idx")
    cases = []
    for total, fps in FRAME_COUNT_CASES:
        scope = {"mel": np.zeros((80, total)), "fps": fps, "mel_step_size": 16}
        exec(code, scope)
        cases.append({"mel_frames": total, "fps": fps, "frames": len(scope["mel_chunks"])})
    (OUT / "wav2lip_frames.json").write_text(json.dumps(cases, indent=1) + "\n")


def rmvpe_fixture(rvc: Path) -> None:
    import soundfile

    from tests.support.parity import seeded_weights

    sys.path.insert(0, str(rvc))
    from infer.rmvpe import E2E, RMVPE

    weights = Path("/tmp") / "parity_rmvpe.pt"
    torch.save(seeded_weights(E2E(4, 1, (2, 2)).state_dict(), RMVPE_SEED), weights)
    speech, _ = soundfile.read(str(SPEECH), dtype="float32")
    clip = speech[8000: 8000 + 20800]  # 1.3 s: 131 frames, padded to 160
    f0 = RMVPE(str(weights), is_half=False, device="cpu").infer_from_audio(clip, thred=0.03)
    np.savez_compressed(OUT / "rmvpe_f0.npz", audio=clip, f0=f0, seed=RMVPE_SEED)


def fairseq_name(hf_name: str) -> str:
    name = hf_name
    for old, new in HF_TO_FAIRSEQ:
        if old == ".layer_norm." and not name.startswith("encoder.layers."):
            continue  # only the layers' attention norm is renamed; encoder.layer_norm keeps its name
        name = name.replace(old, new)
    return name


def rvc_conversion_fixture(rvc: Path) -> None:
    import os
    import types

    import soundfile

    from tests.support.parity import seeded_weights

    sys.path.insert(0, str(rvc))
    sys.modules.setdefault("parselmouth", types.ModuleType("parselmouth"))
    from infer.hubert import HubertModelWithFinalProj
    from infer.module.models import SynthesizerTrnMs768NSFsid
    from infer.rmvpe import E2E, RMVPE
    from infer.vc.pipeline import Pipeline
    from transformers import HubertConfig

    from iris_pipeline.models.rvc.config import FULL_CONFIGS, tiny_config

    hubert = HubertModelWithFinalProj(HubertConfig(**NARROW_HUBERT)).eval()
    by_fairseq = {fairseq_name(k): v for k, v in hubert.state_dict().items()}
    values = seeded_weights(by_fairseq, HUBERT_SEED)
    hubert.load_state_dict({k: values[fairseq_name(k)] for k in hubert.state_dict()})
    # the synthesizer's constructor arguments as RVC's exporter stores them (the 18-item config list)
    config = tiny_config(FULL_CONFIGS["rvc_v2_40k"]).to_list()
    synth = SynthesizerTrnMs768NSFsid(*config, is_half=False).eval()
    synth.load_state_dict(seeded_weights(synth.state_dict(), SYNTH_SEED))
    rmvpe_dir = Path("/tmp") / "parity_rmvpe_root"
    rmvpe_dir.mkdir(exist_ok=True)
    torch.save(seeded_weights(E2E(4, 1, (2, 2)).state_dict(), RMVPE_SEED), rmvpe_dir / "rmvpe.pt")
    os.environ["rmvpe_root"] = str(rmvpe_dir)

    speech, _ = soundfile.read(str(SPEECH), dtype="float32")  # float32, as RVC's ffmpeg loader gives it
    clip = speech[4000: 4000 + 24000]  # 1.5 s; its peak is below 0.95, so the loader's limiter is a no-op
    assert np.abs(clip).max() < 0.95
    settings = types.SimpleNamespace(x_pad=1, x_query=6, x_center=38, x_max=41, is_half=False, device="cpu")
    pipeline = Pipeline(config[-1], settings)
    # load RMVPE first (as a WebUI that converted before): building it inside the call would draw
    # from the seeded generator before the synthesizer's noise
    pipeline.model_rmvpe = RMVPE(str(rmvpe_dir / "rmvpe.pt"), is_half=False, device="cpu")
    torch.manual_seed(NOISE_SEED)
    converted = pipeline.pipeline(hubert, synth, 0, clip, [0, 0, 0], 0, "rmvpe", "", 0.75, 1, config[-1], 0,
                                  0.25, "v2", 0.33)
    np.savez_compressed(OUT / "rvc_conversion.npz", audio=clip, converted_int16=converted,
                        sample_rate=config[-1], seeds=[RMVPE_SEED, HUBERT_SEED, SYNTH_SEED, NOISE_SEED])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav2lip", type=Path, required=True, help="checkout of Rudrabha/Wav2Lip")
    parser.add_argument("--rvc", type=Path, required=True, help="checkout of the RVC WebUI")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    s3fd_fixture(args.wav2lip)
    wav2lip_mel_fixture(args.wav2lip)
    wav2lip_paste_fixture(args.wav2lip)
    wav2lip_frames_fixture(args.wav2lip)
    rmvpe_fixture(args.rvc)
    rvc_conversion_fixture(args.rvc)
    (OUT / "official_av.json").write_text(json.dumps({"commits": COMMITS}, indent=1) + "\n")


if __name__ == "__main__":
    main()
