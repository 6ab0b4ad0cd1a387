"""Files that are never half-written: write to a temporary name beside the target, then rename.

A file is written to a hidden temporary file in the same directory, flushed and fsync'ed, then
renamed over the final name with `os.replace` (atomic on POSIX and Windows), and the directory is
fsync'ed so the rename survives a crash. A reader sees the old file or the new one, never a mix; a
writer killed mid-way leaves at most a hidden `.<name>.<pid>.*.tmp` file beside it; the writer's
process id in the name lets the next run remove the files of processes that no longer exist
(`remove_stale_temp_files`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+" + re.escape(TMP_SUFFIX) + "$")


def create_temp_file(path: Path) -> Path:
    """A new, empty hidden temporary file beside `path`, named after it and this process's id."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX)
    os.close(fd)
    return Path(tmp_name)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Remove the temporary files in `directory` left by writers whose process has died; returns them."""
    removed = []
    try:
        candidates = list(Path(directory).glob(f".*{TMP_SUFFIX}"))
    except OSError:
        return removed
    for path in candidates:
        match = _TEMP_NAME.match(path.name)
        if match is None or int(match["pid"]) == os.getpid() or _process_exists(int(match["pid"])):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError:  # not ours to remove (permissions): leave it
            continue
        removed.append(path)
    return removed


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path` in one rename.

    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_file(path)
    try:
        binary = "b" in mode
        with open(tmp, mode, encoding=None if binary else encoding,
                  newline=None if binary else newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():  # keep the mode of the file we replace (mkstemp creates 0600)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


