"""The Stage interface: one model-backed step of the chain.

A stage is built from its `StageConfig`, loads or builds its models once in `prepare()`, and then
serves its typed methods (the requests and results of `stages.contracts`), once per chunk or per
batch of chunks. It knows nothing of the pipeline that wires stages together, nor of queues,
threads or tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from iris_pipeline.backends.eager import compute_dtype
from iris_pipeline.config import StageConfig


class Stage(ABC):
    """Base class of every stage: subclasses declare `name` and implement `_prepare` and their
    typed methods, which call `require_prepared` first."""

    name: ClassVar[str]

    def __init__(self, config: StageConfig, size: str = "full", device: str | torch.device = "cpu"):
        self.config = config
        self.size = size
        self.device = torch.device(device)
        self._prepared = False

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the eager models (see `backends.eager.compute_dtype`: fp16 is fp32 on CPU)."""
        return compute_dtype(self.config.precision, self.device)

    @property
    def prepared(self) -> bool:
        return self._prepared

    def prepare(self) -> None:
        """Load or build the models, move them to the device, warm up. Idempotent."""
        if not self._prepared:
            self._prepare()
            self._prepared = True

    @abstractmethod
    def _prepare(self) -> None: ...

    def require_prepared(self, method: str) -> None:
        """A typed method's first line: the models it needs exist only after `prepare()`."""
        if not self._prepared:
            raise RuntimeError(f"{self.name}.{method}() called before prepare()")

    def release_caches(self) -> int:
        """Free what the stage keeps between calls beyond what `prepare()` set up; the bytes freed.
        Stages without such caches free nothing."""
        return 0
