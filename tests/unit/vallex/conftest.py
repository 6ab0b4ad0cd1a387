"""CPU stand-ins for CUDA graph capture, shared by the decoder and stage tests."""

from __future__ import annotations

import contextlib

import pytest
import torch

from iris_pipeline.models.vallex import decode


class ReplayedFunction:
    """CPU stand-in for a CUDA graph: `replay()` runs the captured function again."""

    def __init__(self):
        self.fn = None

    def replay(self):
        self.fn()


class NoStream:
    def __init__(self, device=None):
        pass

    def wait_stream(self, other):
        pass


@pytest.fixture
def cpu_graphs(monkeypatch) -> list[ReplayedFunction]:
    """Capture (warm-up, state restore, shared pool, thread-local mode) with CPU stand-ins; the captures."""
    real_capture = decode.capture_graph
    captures: list[ReplayedFunction] = []

    def graph_context(graph, pool=None, capture_error_mode="global"):
        assert capture_error_mode == "thread_local"  # other workers' CUDA calls must not break a capture
        return contextlib.nullcontext()

    def capture_on_cpu(fn, state, warmup=2, pool=None):
        assert pool == ("shared pool",)
        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "Stream", NoStream)
            patch.setattr(torch.cuda, "current_stream", lambda device=None: NoStream())
            patch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
            patch.setattr(torch.cuda, "CUDAGraph", ReplayedFunction)
            patch.setattr(torch.cuda, "graph", graph_context)
            graph = real_capture(fn, state, warmup, pool)
        graph.fn = fn
        captures.append(graph)
        return graph

    monkeypatch.setattr(decode, "capture_graph", capture_on_cpu)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: ("shared pool",))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    return captures
