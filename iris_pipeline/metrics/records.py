"""Result files that are never half-written: atomic CSV/JSON writes and an append-only history.

A file is written to a temporary name in the same directory, flushed and fsync'ed, then renamed
over the final name with `os.replace` (atomic on POSIX and Windows), and the directory is fsync'ed
so the rename survives a crash. A reader therefore sees the old file or the new one, never a mix;
a writer killed mid-way leaves at most a hidden `.<name>.*.tmp` file beside it.

History: `append_history` re-writes the whole history (old rows + new rows) to a temporary file
and renames it, under a file lock. Chosen over appending in place because (1) a new column needs a
new header line, which an in-place append cannot give the old rows, and (2) no reader has to know
how to skip a torn last line. The cost, one copy of the file per append, is small for a history of
benchmark runs (thousands of rows). The lock serialises concurrent writers, so none loses another's rows.

Missing values (None, NaN) are written as "n/a": a figure that was not measured is never 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from iris_pipeline.atomic import TMP_SUFFIX as _TMP_SUFFIX
from iris_pipeline.atomic import atomic_open

NA = "n/a"


def format_cell(value: Any) -> str:
    """A CSV cell: "n/a" for None/NaN, JSON for containers, full-precision repr for floats."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return NA if math.isnan(value) else repr(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_jsonable(value), sort_keys=True)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return format_cell(value.item())  # numpy / torch scalars
    return str(value)


def columns_of(rows: Iterable[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """Union of the rows' keys: `first` in its order, then new keys in order of first appearance."""
    columns = list(dict.fromkeys(first))
    seen = set(columns)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns


def _write_rows(fh: IO[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c)) for c in columns])


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write `rows` (dicts) atomically. Without `columns`: every key, in order of first appearance.
    With `columns`, rows are streamed and keys outside `columns` are an error (never dropped silently)."""
    path = Path(path)
    if columns is None:
        rows = list(rows)
        columns = columns_of(rows)
    columns = list(columns)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{path}: duplicate column names in {columns}")
    known = set(columns)

    def checked(items: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for row in items:
            extra = [k for k in row if k not in known]
            if extra:
                raise ValueError(f"{path}: row has keys outside the columns: {extra}")
            yield row

    with atomic_open(path, "w", newline="") as fh:
        _write_rows(fh, checked(rows), columns)
    return path


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV written here, as dicts of strings ("n/a" stays "n/a"; see `parse_number`)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def parse_number(text: str) -> float:
    """A cell back to a float: "n/a" and "" -> NaN."""
    return math.nan if text in (NA, "") else float(text)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/inf -> null (JSON has no NaN), numpy/torch scalars -> numbers,
    paths and other objects -> strings (through `json.dump(default=str)`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return _jsonable(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays, tensors
        return _jsonable(value.tolist())
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    return value


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write `obj` as JSON atomically (NaN -> null, non-JSON objects -> their str)."""
    path = Path(path)
    with atomic_open(path, "w") as fh:
        json.dump(_jsonable(obj), fh, indent=indent, ensure_ascii=False, allow_nan=False, default=str)
        fh.write("\n")
    return path


def _lock_for(path: Path) -> FileLock:
    return FileLock(str(path.with_name(f".{path.name}.lock")))


def append_history(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Append `rows` to the CSV history at `path` (created if absent) without ever exposing a
    partial file: old rows + new rows go to a temporary file that replaces the history in one
    rename. New columns are added at the end of the header; old rows get "n/a" there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_rows = [dict(r) for r in rows]
    with _lock_for(path):
        old_rows: list[dict[str, str]] = []
        old_columns: list[str] = []
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                old_columns = list(reader.fieldnames or [])
                old_rows = list(reader)
        columns = columns_of(new_rows, first=old_columns)
        _remove_leftovers(path)
        with atomic_open(path, "w", newline="") as fh:
            _write_rows(fh, _chain(old_rows, new_rows), columns)
    return path


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of history writers that were killed. Only called under the history's
    lock, and every history writer holds it while its temporary file exists, so none is live."""
    for leftover in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _chain(*groups: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for group in groups:
        yield from group


def read_history(path: str | Path) -> list[dict[str, str]]:
    """Rows of a history (empty when it does not exist yet); reads under the writers' lock."""
    path = Path(path)
    if not path.exists():
        return []
    with _lock_for(path):
        return read_csv(path)


def to_csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The CSV text `write_csv` would write (for printing or attaching to a report)."""
    rows = list(rows)
    buffer = io.StringIO()
    _write_rows(buffer, rows, list(columns) if columns is not None else columns_of(rows))
    return buffer.getvalue()
