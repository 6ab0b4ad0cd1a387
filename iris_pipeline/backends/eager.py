"""The `eager` and `compile` backends: the PyTorch module itself, cast or autocast, optionally compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype PyTorch computes in for a precision setting on a device.

    int8 is a TensorRT matter: PyTorch runs it in fp16. Off CUDA, fp16 (and so int8) runs as fp32:
    CPU half-precision kernels are several times slower than fp32 (a tiny 10 s render took 32 s
    instead of 6 s), so fp16 there would only slow the run down. bf16 is kept: CPUs have bf16 kernels.
    """
    if torch.device(device).type != "cuda" and precision in ("fp16", "int8"):
        return torch.float32
    if precision == "int8":
        return torch.float16
    return PRECISION_DTYPES[precision]


class EagerGraph:
    """Calls `module` with floating inputs in the compute dtype.

    `autocast=False` casts the module's weights to the dtype (the fast, memory-saving way);
    `autocast=True` keeps fp32 weights and runs under `torch.autocast` (numerically safer for
    reductions and norms). Outputs are returned as the module produces them.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        precision: str,
        device: str | torch.device = "cpu",
        autocast: bool = False,
    ):
        self.device = torch.device(device)
        self.dtype = compute_dtype(precision, self.device)
        self.autocast = autocast and self.dtype != torch.float32
        weights_dtype = torch.float32 if self.autocast else self.dtype
        self.module = module.to(device=self.device, dtype=weights_dtype).eval()
        self.input_dtype = torch.float32 if self.autocast else self.dtype
        self.forward: Callable[..., Any] = self.module

    def __call__(self, *inputs: torch.Tensor):
        args = [
            t.to(device=self.device, dtype=self.input_dtype) if t.is_floating_point() else t.to(self.device)
            for t in inputs
        ]
        with torch.no_grad():
            if self.autocast:
                with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                    return self.forward(*args)
            return self.forward(*args)


def compile_callable(
    fn: Callable[..., Any], mode: str = "default", dynamic: bool | None = None, fullgraph: bool = False
) -> Callable[..., Any]:
    """`torch.compile(fn)`; "default" passes no mode (torch's default)."""
    kwargs: dict[str, Any] = {"dynamic": dynamic, "fullgraph": fullgraph}
    if mode != "default":
        kwargs["mode"] = mode
    return torch.compile(fn, **kwargs)


def compile_step(
    step: Callable[..., Any], mode: str = "reduce-overhead", fullgraph: bool = True
) -> Callable[..., Any]:
    """Compile a static-shape step function (e.g. one autoregressive decode step over a static KV
    cache) so that CUDA graphs replay it: mode "reduce-overhead" records a graph per input shape and
    replays it; inputs must keep their shapes and addresses stable between calls (static buffers)."""
    return torch.compile(step, mode=mode, fullgraph=fullgraph, dynamic=False)


class CompiledGraph(EagerGraph):
    """`EagerGraph` whose module is run through `torch.compile` (compiled lazily on first call)."""

    def __init__(
        self,
        module: torch.nn.Module,
        precision: str,
        device: str | torch.device = "cpu",
        autocast: bool = False,
        mode: str = "default",
        dynamic: bool | None = None,
        fullgraph: bool = False,
    ):
        super().__init__(module, precision, device, autocast)
        self.forward = compile_callable(self.module, mode=mode, dynamic=dynamic, fullgraph=fullgraph)
