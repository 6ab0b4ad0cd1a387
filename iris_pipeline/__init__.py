"""iris_pipeline: talking-avatar inference (RVC -> VALL-E X -> FastPitch -> Wav2Lip) and its perf suite."""

__version__ = "0.1.0"
