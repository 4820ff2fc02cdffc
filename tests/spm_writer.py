"""Write a SentencePiece model (`tokenizer.model`, protobuf) without sentencepiece: for the tests'
InternLM2 checkpoints (tests/test_convert.py, tests/paper_shaped.py). Field numbers as in
sentencepiece_model.proto (pieces 1: piece 1, score 2, type 3; trainer_spec 2: model_type 3,
byte_fallback 35, unk/bos/eos/pad ids 40-43; normalizer_spec 3: name 1, add_dummy_prefix 3,
remove_extra_whitespaces 4)."""

from __future__ import annotations

import struct

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int32 (pad_id -1) as its 64-bit two's complement
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def field(number: int, value: bytes | float | int) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(value)


def model_proto(
    pieces: list[tuple[str, float, int]],
    add_dummy_prefix: bool = True,
    byte_fallback: bool = True,
) -> bytes:
    """A BPE ModelProto: (piece, score, type) in id order; unk 0, bos 1, eos 2, no pad."""
    body = b"".join(
        field(1, field(1, p.encode()) + field(2, float(s)) + field(3, t)) for p, s, t in pieces
    )
    trainer_fields = ((3, 2), (35, int(byte_fallback)), (40, 0), (41, 1), (42, 2), (43, -1))
    trainer = b"".join(field(n, v) for n, v in trainer_fields)
    normalizer = field(1, b"identity") + field(3, int(add_dummy_prefix)) + field(4, 0)
    return body + field(2, trainer) + field(3, normalizer)
