"""A pickle payload that runs code when loaded: what a malicious checkpoint would carry.

Unpickling `RunsCode(marker)` calls `open(marker, "w")`, so a test can check afterwards that the
loader refused the file without running anything (the marker must not exist).
"""

from __future__ import annotations

from pathlib import Path


class RunsCode:
    def __init__(self, marker: Path | str):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
