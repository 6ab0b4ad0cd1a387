"""Shared helpers of the codec tests."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.malicious import RunsCode


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(1), "payload": RunsCode(marker)}, path)
