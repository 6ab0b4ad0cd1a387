"""Root pytest wiring: markers, command-line options, and the fixtures every suite shares.

`gpu`-marked tests are skipped, with the reason shown, where no CUDA device is present, so
`pytest -m gpu` on a CPU machine reports skips and never passes or errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DEFAULT_CLIP_LENGTHS = "5,10,30"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iris", "iris_pipeline performance suite")
    group.addoption("--clip-lengths", default=DEFAULT_CLIP_LENGTHS,
                    help="comma-separated clip lengths in seconds for the perf tests (default: %(default)s)")
    group.addoption("--targets", default=None, metavar="FILE",
                    help="targets YAML for the perf gates (default: the users' targets shipped with the package)")
    group.addoption("--engine-dir", default=None, metavar="DIR",
                    help="engine cache directory (default: engines/ at the repository root)")


def _cuda_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device: torch.cuda.is_available() is False on this machine"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _cuda_reason()
    if reason is None:
        return
    skip_gpu = pytest.mark.skip(reason=reason)
    for item in items:
        # the marker, not `item.keywords`: keywords also hold directory names (a checkout in .../gpu/)
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


def parse_clip_lengths(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise pytest.UsageError(f"--clip-lengths: expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise pytest.UsageError(f"--clip-lengths: every clip length must be > 0 seconds, got {text!r}")
    return values


@pytest.fixture(scope="session")
def clip_lengths(pytestconfig: pytest.Config) -> list[float]:
    return parse_clip_lengths(pytestconfig.getoption("--clip-lengths"))


@pytest.fixture(scope="session")
def targets(pytestconfig: pytest.Config):
    from iris_pipeline.config import load_targets

    return load_targets(pytestconfig.getoption("--targets"))


@pytest.fixture(scope="session")
def engine_dir(pytestconfig: pytest.Config) -> Path:
    option = pytestconfig.getoption("--engine-dir")
    path = Path(option) if option else Path(__file__).resolve().parent / "engines"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The CUDA device where there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
