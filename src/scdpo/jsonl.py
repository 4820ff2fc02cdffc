"""JSON Lines I/O with errors that name the file and line, and crash-safe writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


class DataError(ValueError):
    """Malformed input data; the message names the file, line and key."""


def read_jsonl(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
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


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write atomically (temp file + rename), so a crash never leaves a half-written output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append and fsync: the resume state of long generation jobs."""
    with Path(path).open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def require(record: dict, key: str, where: str) -> object:
    """record[key] (dotted keys reach into nested objects) or a DataError naming where."""
    value: object = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{where}: missing key '{key}'")
        value = value[part]
    return value
