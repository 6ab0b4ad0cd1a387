"""The Stage interface: one model-backed step of the chain.

A stage is built from its `StageConfig`, loads or builds its models once in `prepare()`, and then
turns named inputs into named outputs in `run()`, once per chunk. It knows nothing of the pipeline
that wires stages together, nor of queues, threads or tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from iris_pipeline.config import StageConfig

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class Stage(ABC):
    """Base class of every stage.

    Subclasses declare `name`, `inputs` and `outputs` (the keys `run` reads and returns) and
    implement `_prepare` and `run`.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]

    def __init__(self, config: StageConfig, size: str = "full", device: str | torch.device = "cpu"):
        self.config = config
        self.size = size
        self.device = torch.device(device)
        self._prepared = False

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the eager models.

        int8 is a backend concern (TensorRT); its eager fallback runs fp16. On the CPU, fp16 runs
        as fp32: CPU half-precision kernels are several times slower than fp32 (a tiny 10 s render
        took 32 s instead of 6 s), so asking for fp16 there would only slow the run down.
        """
        precision = self.config.precision
        if self.device.type != "cuda" and precision in ("fp16", "int8"):
            return torch.float32
        if precision == "int8":
            return torch.float16
        return PRECISION_DTYPES[precision]

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

    @abstractmethod
    def run(self, **inputs: Any) -> dict[str, Any]:
        """Process one chunk: keys of `inputs` are `self.inputs`, keys of the result `self.outputs`."""

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        missing = [k for k in self.inputs if k not in inputs]
        if missing:
            raise TypeError(f"{self.name}.run() is missing inputs: {', '.join(missing)}")
        if not self._prepared:
            raise RuntimeError(f"{self.name}.run() called before prepare()")
