"""JSON Lines I/O with errors that name the file and line, and crash-safe writes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """Malformed input data; the message names the file, line and key."""


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}:{number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column "
            f"{error.start + 1}); convert the file, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """The objects of a UTF-8 JSONL file (a leading byte-order mark is skipped)."""
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw.removeprefix(BOM) if number == 1 else raw, path, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{number}: expected a JSON object, got {type(record).__name__}"
                )
            yield record


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A handle on `<path>.tmp`, renamed to `path` once the block ends without an error, so a
    crash never leaves a half-written `path`. If the block or the write fails (disk full, an
    exception, Ctrl-C), the temporary file is removed: the one place that cleanup happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write atomically (atomic_write), so a crash never leaves a half-written output."""
    count = 0
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append and fsync: the resume state of long generation jobs. A failed append (disk full)
    cuts the file back to its earlier end, so no torn line is left for the next append to
    follow."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def require(record: dict, key: str, where: str) -> object:
    """record[key] (dotted keys reach into nested objects) or a DataError naming where."""
    value: object = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{where}: missing key '{key}'")
        value = value[part]
    return value
