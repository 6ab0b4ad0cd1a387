"""Shared helpers of the codec tests (imported by file name: the test folder has no __init__)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class _RunsCode:
    """Pickles to a call of os.system: what a malicious checkpoint would contain."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
