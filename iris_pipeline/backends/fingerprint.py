"""Fingerprints of what makes a built artifact invalid: the model's weights and the machine.

`module_hash` covers a module's parameters and buffers (names, dtypes, shapes, bytes) and its
config; `device_fingerprint` covers the GPU model, compute capability and CUDA version (or "cpu");
`backend_version` names the version of the tool that produced an artifact.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch


def module_hash(module: torch.nn.Module, config: Any = None) -> str:
    """SHA-256 over every parameter and buffer of `module` plus a canonical form of `config`."""
    digest = hashlib.sha256()
    digest.update(type(module).__qualname__.encode())
    digest.update(canonical_json(config).encode())
    for name, tensor in module.state_dict(keep_vars=False).items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"\x00{name}:{t.dtype}:{tuple(t.shape)}\x00".encode())
        if t.numel():
            flat = t.reshape(-1) if t.dtype != torch.bool else t.reshape(-1).to(torch.uint8)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys; dataclasses, pydantic models, tuples, paths and dtypes made plain."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic
        return _plain(value.model_dump(mode="json"))
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    return str(value)


@dataclass(frozen=True)
class DeviceFingerprint:
    """The machine an artifact was built for. On the CPU, `gpu_name` is the CPU architecture."""

    kind: str  # "cuda" or "cpu"
    gpu_name: str
    compute_capability: str
    cuda_version: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def device_fingerprint(device: str | torch.device = "cpu") -> DeviceFingerprint:
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceFingerprint(
            kind="cuda",
            gpu_name=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            cuda_version=str(torch.version.cuda),
        )
    return DeviceFingerprint(
        kind="cpu", gpu_name=platform.machine() or "unknown", compute_capability="none", cuda_version="none"
    )


# backend name -> module whose __version__ versions its artifacts
_BACKEND_MODULES = {
    "tensorrt": "tensorrt",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "aoti": "torch",
    "compile": "torch",
    "eager": "torch",
}


def backend_version(backend: str) -> str:
    """`<module> <version>` of the tool behind `backend`, or `<module> missing`."""
    module_name = _BACKEND_MODULES.get(backend, backend)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return f"{module_name} missing"
    return f"{module_name} {getattr(module, '__version__', 'unknown')}"
