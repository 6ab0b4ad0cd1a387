"""Accuracy of a reduced-precision graph against fp32: cosine similarity and max absolute error.

Computed over held-out inputs (not the calibration set), every output of every sample; the worst
values decide. A gate refuses a graph whose worst cosine is below `min_cosine` or whose worst error
is above `max_abs_error`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from iris_pipeline.backends.cache import EngineRefusedError
from iris_pipeline.backends.graph import GraphSpec
from iris_pipeline.stage_options import Int8Options


@dataclass(frozen=True)
class AccuracyReport:
    min_cosine: float
    mean_cosine: float
    max_abs_error: float
    mean_abs_error: float
    reference_max_abs: float
    samples: int
    # cosine of the mean-removed outputs (Pearson r): unlike plain cosine it is not flattered by a
    # large common offset (e.g. sigmoid outputs sitting near 0.5)
    min_centered_cosine: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def line(self) -> str:
        return (
            f"cosine min {self.min_cosine:.5f} (mean {self.mean_cosine:.5f}, centered min "
            f"{self.min_centered_cosine:.5f}), max |err| "
            f"{self.max_abs_error:.4g} (mean {self.mean_abs_error:.3g}; reference max |x| "
            f"{self.reference_max_abs:.4g}) over {self.samples} held-out samples"
        )


def _flat(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _as_list(outputs) -> list:
    if isinstance(outputs, (torch.Tensor, np.ndarray)):
        return [outputs]
    return list(outputs)


def compare(reference: Sequence, candidate: Sequence) -> AccuracyReport:
    """Per-sample outputs (a tensor or a tuple of tensors per sample) of fp32 vs the candidate."""
    cosines, centered, errors, means, ref_max = [], [], [], [], 0.0
    for ref_sample, cand_sample in zip(reference, candidate, strict=True):
        for ref, cand in zip(_as_list(ref_sample), _as_list(cand_sample), strict=True):
            r, c = _flat(ref), _flat(cand)
            if r.shape != c.shape:
                raise ValueError(f"output sizes differ: {r.shape} vs {c.shape}")
            cosines.append(_cosine(r, c))
            centered.append(_cosine(r - r.mean(), c - c.mean()) if r.size > 1 else 1.0)
            diff = np.abs(r - c)
            errors.append(float(diff.max(initial=0.0)))
            means.append(float(diff.mean()) if diff.size else 0.0)
            ref_max = max(ref_max, float(np.abs(r).max(initial=0.0)))
    if not cosines:
        raise ValueError("no outputs to compare")
    return AccuracyReport(
        min(cosines),
        float(np.mean(cosines)),
        max(errors),
        float(np.mean(means)),
        ref_max,
        len(reference),
        min(centered),
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.allclose(a, b))


@dataclass(frozen=True)
class AccuracyGate:
    min_cosine: float
    max_abs_error: float

    def check(self, report: AccuracyReport, what: str) -> None:
        """Raise `EngineRefusedError` (with the figures attached as `.info`) if `report` misses."""
        problems = []
        if not report.min_cosine >= self.min_cosine:
            problems.append(f"cosine {report.min_cosine:.5f} < {self.min_cosine}")
        if not report.max_abs_error <= self.max_abs_error:
            problems.append(f"max |err| {report.max_abs_error:.4g} > {self.max_abs_error}")
        if problems:
            error = EngineRefusedError(
                f"{what}: accuracy gate failed ({'; '.join(problems)}); {report.line()}"
            )
            error.info = {"accuracy": report.as_dict(), "gate": asdict(self)}
            raise error


def accuracy_gate(spec: GraphSpec, int8: Int8Options) -> AccuracyGate:
    """The gate of `spec`: thresholds from the INT8 options where set, else the graph's defaults."""
    return AccuracyGate(
        min_cosine=int8.min_cosine if int8.min_cosine is not None else spec.accuracy["min_cosine"],
        max_abs_error=int8.max_abs_error
        if int8.max_abs_error is not None
        else spec.accuracy["max_abs_error"],
    )
