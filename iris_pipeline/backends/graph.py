"""`GraphSpec`: what a stage hands to a backend — a module, its named inputs and their shape ranges.

Input dimensions are ints (fixed) or names (dynamic). A shape profile gives each dynamic name its
(min, opt, max) range: ONNX export marks those axes dynamic, TensorRT builds one optimisation
profile from them, and sample inputs are drawn inside them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from iris_pipeline.errors import ConfigError, InputError

Dims = Mapping[str, int]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input. Integer inputs draw values in [0, high)."""

    name: str
    dims: tuple[int | str, ...]
    dtype: torch.dtype = torch.float32
    high: int = 2

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point

    def shape(self, dims: Dims) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.dims)


@dataclass(frozen=True)
class ShapeProfile:
    """(min, opt, max) per dynamic dimension name."""

    ranges: Mapping[str, tuple[int, int, int]]

    def __post_init__(self) -> None:
        for name, (lo, opt, hi) in self.ranges.items():
            if not 1 <= lo <= opt <= hi:
                raise ConfigError(f"shape profile {name}: need 1 <= min <= opt <= max, got {(lo, opt, hi)}")

    def point(self, which: str) -> dict[str, int]:
        index = {"min": 0, "opt": 1, "max": 2}[which]
        return {name: r[index] for name, r in self.ranges.items()}

    def random_point(self, generator: torch.Generator) -> dict[str, int]:
        return {
            name: int(torch.randint(lo, hi + 1, (1,), generator=generator))
            for name, (lo, _, hi) in self.ranges.items()
        }

    def contains(self, dims: Dims) -> bool:
        return all(lo <= dims[name] <= hi for name, (lo, _, hi) in self.ranges.items())

    def as_dict(self) -> dict[str, list[int]]:
        return {name: list(r) for name, r in sorted(self.ranges.items())}


InputMaker = Callable[[Dims, torch.Generator], tuple[torch.Tensor, ...]]


@dataclass
class GraphSpec:
    """A stage's compute graph as backends see it.

    `make_inputs(dims, generator)` draws one batch of inputs shaped by `dims`, ideally through the
    stage's real front end (mel of speech-like audio, face crops); without it inputs are Gaussian
    (floats) or uniform (ints). `config` is hashed into engine keys with the weights.
    `accuracy` holds the default INT8 gate (`min_cosine`, `max_abs_error`) for this graph's outputs.
    """

    name: str
    module: torch.nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    profile: ShapeProfile
    config: Any = None
    make_inputs: InputMaker | None = None
    accuracy: dict[str, float] = field(default_factory=lambda: {"min_cosine": 0.99, "max_abs_error": 0.1})
    # inputs a stage recorded while running on real data; when set, INT8 calibration and held-out
    # sets are drawn from these (seeded shuffle) instead of `make_inputs`
    recorded_inputs: list[tuple[torch.Tensor, ...]] | None = None
    # op types a reduced-precision (INT8 + fp16) graph must keep in fp32, as the module itself does
    fp32_op_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = {d for spec in self.inputs for d in spec.dims if isinstance(d, str)}
        missing = named - set(self.profile.ranges)
        if missing:
            raise ConfigError(f"graph {self.name}: no shape range for dynamic dimension(s) {sorted(missing)}")

    def check_in_profile(self, inputs: Sequence[torch.Tensor], stage: str) -> None:
        """Refuse, with one line, inputs whose dynamic dimensions leave the profile's ranges (a
        TensorRT engine runs only the shapes of the profile it was built for)."""
        for tensor_spec, tensor in zip(self.inputs, inputs, strict=True):
            for dim, size in zip(tensor_spec.dims, tensor.shape, strict=True):
                if isinstance(dim, str):
                    lo, _, hi = self.profile.ranges[dim]
                    if not lo <= size <= hi:
                        raise InputError(f"{stage}: {tensor_spec.name} has {dim}={size}, outside the {lo}..{hi} "
                                         f"the tensorrt engine {self.name} was built for")

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            spec.name: {i: d for i, d in enumerate(spec.dims) if isinstance(d, str)}
            for spec in self.inputs
            if any(isinstance(d, str) for d in spec.dims)
        }

    def shapes(self, which: str) -> dict[str, tuple[int, ...]]:
        """Input shapes at the profile's "min", "opt" or "max" point."""
        dims = self.profile.point(which)
        return {spec.name: spec.shape(dims) for spec in self.inputs}

    def sample(self, dims: Dims, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        if self.make_inputs is not None:
            tensors = tuple(self.make_inputs(dims, generator))
        else:
            tensors = tuple(_random_tensor(spec, dims, generator) for spec in self.inputs)
        for spec, tensor in zip(self.inputs, tensors, strict=True):
            if tuple(tensor.shape) != spec.shape(dims):
                raise ValueError(
                    f"graph {self.name}: make_inputs gave {spec.name} shape "
                    f"{tuple(tensor.shape)}, expected {spec.shape(dims)}"
                )
        return tensors

    def recorded_inputs_hash(self) -> str | None:
        if not self.recorded_inputs:
            return None
        from iris_pipeline.cache import content_hash, tensor_hash

        return content_hash(*(tensor_hash(t) for sample in self.recorded_inputs for t in sample))

    def example_inputs(self, which: str = "opt", seed: int = 0) -> tuple[torch.Tensor, ...]:
        return self.sample(self.profile.point(which), torch.Generator().manual_seed(seed))

    def sample_set(self, count: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
        """`count` seeded samples at shapes between the profile's min and opt (the first at "opt").

        Capped at "opt" so that a calibration set of full-size batches stays small on disk.
        """
        generator = torch.Generator().manual_seed(seed)
        below_opt = ShapeProfile({n: (lo, opt, opt) for n, (lo, opt, _) in self.profile.ranges.items()})
        samples = []
        for i in range(count):
            dims = self.profile.point("opt") if i == 0 else below_opt.random_point(generator)
            samples.append(self.sample(dims, generator))
        return samples


def _random_tensor(spec: TensorSpec, dims: Dims, generator: torch.Generator) -> torch.Tensor:
    shape = spec.shape(dims)
    if spec.is_float:
        return torch.randn(shape, generator=generator).to(spec.dtype)
    return torch.randint(0, spec.high, shape, generator=generator, dtype=spec.dtype)


def cast_inputs(
    tensors: Sequence[torch.Tensor], dtype: torch.dtype | None, device: torch.device | None = None
) -> tuple[torch.Tensor, ...]:
    """Floating tensors to `dtype` (when given), everything to `device` (when given)."""
    out = []
    for t in tensors:
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if device is not None:
            t = t.to(device)
        out.append(t)
    return tuple(out)
