"""Root pytest wiring: markers, command-line options, and the fixtures every suite shares.

`gpu`-marked tests are skipped, with the reason shown, where no CUDA device is present, so
`pytest -m gpu` on a CPU machine reports skips and never passes or errors. Where a GPU is required
(`IRIS_REQUIRE_GPU=1`, set by the GPU perf workflow), a session that collects `gpu` tests without a
usable CUDA device fails at collection with one line instead: a gate that did not run on a GPU must
never read as passed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DEFAULT_CLIP_LENGTHS = "5,10,30"
REQUIRE_GPU_ENV = "IRIS_REQUIRE_GPU"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iris", "iris_pipeline performance suite")
    group.addoption("--clip-lengths", default=DEFAULT_CLIP_LENGTHS,
                    help="comma-separated clip lengths in seconds for the perf tests (default: %(default)s)")
    group.addoption("--targets", default=None, metavar="FILE",
                    help="targets YAML for the perf gates (default: the users' targets shipped with the package)")
    group.addoption("--engine-dir", default=None, metavar="DIR",
                    help="engine cache directory (default: engines/ at the repository root)")


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers it too where installed; the perf suite puts its tests in one group
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist runs a group's tests in one worker")


def _cuda_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device: torch.cuda.is_available() is False on this machine"
    return None


def _usable_cuda_reason() -> str | None:
    """Why no CUDA device can run work here (None: one can): available, and a tensor can be made on it."""
    reason = _cuda_reason()
    if reason is not None:
        return reason
    try:
        torch.ones(1, device="cuda").add_(1)
        torch.cuda.synchronize()
    except RuntimeError as exc:
        return f"CUDA is present but unusable: {str(exc).splitlines()[0]}"
    return None


@pytest.hookimpl(trylast=True)  # after `-m` / `-k` deselection: only the gpu tests that will run count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if os.environ.get(REQUIRE_GPU_ENV) == "1" and gpu_items:
        reason = _usable_cuda_reason()
        if reason is not None:
            raise pytest.UsageError(f"{REQUIRE_GPU_ENV}=1 but {len(gpu_items)} gpu tests cannot run: {reason}")
    reason = _cuda_reason()
    if reason is None:
        return
    skip_gpu = pytest.mark.skip(reason=reason)
    for item in items:
        # the marker, not `item.keywords`: keywords also hold directory names (a checkout in .../gpu/)
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


def parse_clip_lengths(text: str) -> list[float]:
    """`iris bench`'s parsing of --clip-lengths; a bad value is a usage error of pytest."""
    from iris_pipeline.benchmark.settings import parse_clip_lengths as parse
    from iris_pipeline.errors import IrisError

    try:
        return parse(text)
    except IrisError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: their tensors are small, so threads cost more than they
    give, and the test machine's cores are shared. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
