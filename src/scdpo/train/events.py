"""TensorBoard event files of scalars, written and read with the standard library alone.

An event file (`events.out.tfevents.<time>.<host>.<pid>.<n>`) is a TFRecord stream: each record is
a little-endian uint64 length, its masked CRC-32C, the bytes of one `Event` protocol buffer, and
their masked CRC-32C. The first event holds `file_version: "brain.Event:2"`; each later one a
wall time, a step and a `Summary` of `(tag, simple_value)` pairs, TensorBoard's scalar form (the
one torch's SummaryWriter and tensorboardX write with `add_scalar`). TensorBoard reads these files
(`tensorboard --logdir DIR`); the report reads them with `read_scalars`, so neither the training
nor the report env needs TensorFlow, tensorboard or protobuf.

The fields used (tensorflow/core/util/event.proto, framework/summary.proto): Event.wall_time = 1
(double), Event.step = 2 (int64), Event.file_version = 3 (string), Event.summary = 5; Summary.value
= 1 (repeated); Summary.Value.tag = 1 (string), Summary.Value.simple_value = 2 (float).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from scdpo.protobuf import fields

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# --- protocol buffer encoding, the few wire types used ------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative numbers
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def encode_event(
    wall_time: float, step: int, scalars: dict[str, float] | None = None, file_version: str = ""
) -> bytes:
    """One serialised Event: a file version, or scalars at a step."""
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
    if file_version:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        out += _bytes_field(5, values)
    return out


def record(data: bytes) -> bytes:
    """`data` framed as one TFRecord."""
    header = struct.pack("<Q", len(data))
    crcs = struct.pack("<I", masked_crc(header)), struct.pack("<I", masked_crc(data))
    return header + crcs[0] + data + crcs[1]


class EventWriter:
    """Appends scalar events to a new event file in `logdir`, flushed after every write."""

    _count = 0

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        EventWriter._count += 1
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{EventWriter._count}"
        )
        self.path = self.logdir / name
        self._handle = self.path.open("ab")
        self._write(encode_event(time.time(), 0, file_version=FILE_VERSION))

    def _write(self, event: bytes) -> None:
        self._handle.write(record(event))
        self._handle.flush()

    def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        if values:
            self._write(encode_event(time.time() if wall_time is None else wall_time, step, values))

    def close(self) -> None:
        self._handle.close()


# --- reading ----------------------------------------------------------------------------------


def decode_event(data: bytes) -> dict:
    """wall_time, step, file_version and the scalars (simple values) of one serialised Event."""
    event = {"wall_time": 0.0, "step": 0, "file_version": "", "scalars": {}}
    for field, wire, value in fields(data):
        if field == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >> 63 else value
        elif field == 3 and wire == 2:
            event["file_version"] = value.decode()
        elif field == 5 and wire == 2:
            for _, _, summary_value in fields(value):
                tag, simple = None, None
                for f, w, v in fields(summary_value):
                    if f == 1 and w == 2:
                        tag = v.decode()
                    elif f == 2 and w == 5:
                        simple = struct.unpack("<f", v)[0]
                if tag is not None and simple is not None:
                    event["scalars"][tag] = simple
    return event


def read_records(path: str | Path) -> Iterator[bytes]:
    """The records of one event file. A torn last record (a killed writer) ends the file; a
    record whose checksum fails raises."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (size,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8 : pos + 12])[0] != masked_crc(header):
            raise ValueError(f"{path}: corrupt record header at byte {pos}")
        end = pos + 12 + size + 4
        if end > len(data):
            return
        body = data[pos + 12 : pos + 12 + size]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc(body):
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        yield body
        pos = end


def event_files(logdir: str | Path) -> list[Path]:
    """The event files under `logdir`, by name."""
    return sorted(p for p in Path(logdir).rglob("*") if p.is_file() and "tfevents" in p.name)


def read_scalars(logdir: str | Path) -> list[dict]:
    """Every scalar under `logdir` as {tag, step, value, wall_time}, sorted by tag and step. A
    step written again (a run resumed from a checkpoint before its last logged step) keeps the
    value written last (the later wall time)."""
    latest: dict[tuple[str, int], dict] = {}
    for path in event_files(logdir):
        for body in read_records(path):
            event = decode_event(body)
            for tag, value in event["scalars"].items():
                key = (tag, event["step"])
                if key in latest and latest[key]["wall_time"] > event["wall_time"]:
                    continue
                latest[key] = {
                    "tag": tag,
                    "step": event["step"],
                    "value": value,
                    "wall_time": event["wall_time"],
                }
    return [latest[key] for key in sorted(latest)]
