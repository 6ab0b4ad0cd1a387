"""Feature retrieval from an RVC training-set index (faiss): each frame is blended with its 8 nearest
training features, weighted by 1 / distance^2, as RVC's inference does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iris_pipeline.errors import ConfigError

N_NEIGHBOURS = 8


class FeatureIndex:
    """A faiss index (e.g. `IVF..,Flat` over 768-d HuBERT features) plus all its vectors, reconstructed once."""

    def __init__(self, path: str | Path, option_name: str = "index_path"):
        try:
            import faiss
        except ImportError as exc:
            raise ConfigError(f"{option_name}: feature retrieval needs faiss-cpu "
                              f"(pip install 'iris_pipeline[index]')") from exc
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{option_name}: {path} does not exist or is not a file")
        try:
            self.index = faiss.read_index(str(path))
            self.vectors = self.index.reconstruct_n(0, self.index.ntotal).astype(np.float32)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{option_name}: {path} is not a readable faiss index ({first})") from exc
        if self.index.ntotal == 0:
            raise ConfigError(f"{option_name}: {path} is an empty faiss index")

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def retrieve(self, features: np.ndarray) -> np.ndarray:
        """features [T, dim] float32 -> the distance-weighted mean of each frame's nearest stored vectors."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        k = min(N_NEIGHBOURS, self.index.ntotal)
        distances, ids = self.index.search(features, k)
        # 1/d^2 weights; an exact match (d = 0) would be infinite, so distances get a tiny floor,
        # and slots faiss could not fill (id -1) get no weight.
        weights = np.square(1.0 / np.maximum(distances, 1e-12)) * (ids >= 0)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-30)
        return np.sum(self.vectors[np.maximum(ids, 0)] * weights[..., None], axis=1).astype(np.float32)
