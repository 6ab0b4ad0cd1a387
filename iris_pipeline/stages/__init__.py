"""Stages: one per model of the chain, each with `prepare()` once and `run(...)` per chunk."""

from iris_pipeline.stages.base import Stage

__all__ = ["Stage"]
