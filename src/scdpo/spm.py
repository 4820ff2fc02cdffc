"""A SentencePiece BPE model (`tokenizer.model`) as a fast tokenizer, without sentencepiece.

InternLM2 ships its tokenizer as a SentencePiece model behind remote code: a slow tokenizer that
imports `sentencepiece`, and a fast one built from it by a converter that calls the transformers
4 API of `SentencePieceExtractor.extract` (transformers 5 changed it) and also needs
sentencepiece. Neither package is in the pinned envs. The protobuf of the model is simple, so
this module reads it (`read_model`: pieces with score and type, trainer and normalizer
settings) and builds what InternLM2's fast converter builds (`InternLM2Converter`, from
transformers' `LlamaConverter`): BPE over the pieces, merges ordered by the merged piece's
score, byte fallback, `▁` for spaces (with a leading one when the model adds a dummy prefix),
the `<s>` template, and the tokenizer config's added tokens at their ids. The result is a plain
`PreTrainedTokenizerFast` (tokenizer.json) that every stage and vLLM load without remote code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from scdpo.protobuf import fields

# SentencePiece piece types (sentencepiece_model.proto).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE = 2  # TrainerSpec.model_type
SPACE = "\u2581"  # ▁


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class SpModel:
    pieces: list[Piece] = field(default_factory=list)
    model_type: int = 1  # UNIGRAM, protobuf default
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    precompiled_charsmap: bytes = b""


# --- the model file (protobuf wire format: scdpo.protobuf) ---------------------------------


def _int32(value: int) -> int:
    """A varint holding a negative int32 (pad_id -1) is its 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_model(data: bytes) -> SpModel:
    """The parts of a SentencePiece ModelProto a BPE tokenizer needs (field numbers as in
    sentencepiece_model.proto: pieces 1, trainer_spec 2, normalizer_spec 3)."""
    model = SpModel()
    for number, _, value in fields(data):
        if number == 1:
            piece = Piece("")
            for n, _, v in fields(value):
                if n == 1:
                    piece.piece = v.decode("utf-8")
                elif n == 2:
                    piece.score = struct.unpack("<f", v)[0]
                elif n == 3:
                    piece.type = v
            model.pieces.append(piece)
        elif number == 2:
            trainer = {n: v for n, _, v in fields(value)}
            model.model_type = trainer.get(3, model.model_type)
            model.byte_fallback = bool(trainer.get(35, 0))
            model.unk_id = _int32(trainer.get(40, 0))
            model.bos_id = _int32(trainer.get(41, 1))
            model.eos_id = _int32(trainer.get(42, 2))
            model.pad_id = _int32(trainer.get(43, -1 & 0xFFFFFFFFFFFFFFFF))
        elif number == 3:
            normalizer = {n: v for n, _, v in fields(value)}
            model.precompiled_charsmap = normalizer.get(2, b"")
            model.add_dummy_prefix = bool(normalizer.get(3, 1))
            model.remove_extra_whitespaces = bool(normalizer.get(4, 1))
    return model


# --- the fast tokenizer -------------------------------------------------------------------------


def _added_tokens(folder: Path) -> dict[int, dict]:
    """{id: {content, special, ...}} from tokenizer_config.json's added_tokens_decoder."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return {int(k): v for k, v in (config.get("added_tokens_decoder") or {}).items()}


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def backend_tokenizer(model: SpModel, added: dict[int, dict]):
    """The `tokenizers` pipeline InternLM2's fast converter builds (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE as BPEModel
    from transformers.tokenization_utils_base import generate_merges

    if model.model_type != BPE:
        raise ValueError(f"a BPE SentencePiece model is expected, not type {model.model_type}")
    pieces = [(p.piece, p.score) for p in model.pieces]
    # As InternLM2's converter: ids 0-2 are <unk>, <s>, </s>; an added token names its id.
    for i, name in enumerate(("<unk>", "<s>", "</s>")):
        if i < len(pieces):
            pieces[i] = (name, pieces[i][1])
    for i, token in added.items():
        if i < len(pieces):
            pieces[i] = (token["content"], pieces[i][1])
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    # Merges never build, nor start from, a piece SentencePiece never makes of text: control,
    # unknown, unused and byte pieces, and the added tokens (matched whole).
    text_pieces = (NORMAL, USER_DEFINED)
    never = {pieces[i][0] for i, p in enumerate(model.pieces) if p.type not in text_pieces}
    never |= {t["content"] for t in added.values()}
    merges = generate_merges(vocab, dict(pieces), skip_tokens=never)
    unk = pieces[model.unk_id][0] if 0 <= model.unk_id < len(pieces) else None
    tokenizer = Tokenizer(
        BPEModel(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=model.byte_fallback)
    )
    steps = [normalizers.Prepend(SPACE)] if model.add_dummy_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    tokenizer.pre_tokenizer = None
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            *([decoders.Strip(content=" ", left=1)] if model.add_dummy_prefix else []),
        ]
    )
    # SentencePiece matches user-defined pieces whole; the config's added tokens are special
    # where it says so.
    user = [
        AddedToken(p.piece, normalized=False, special=False)
        for i, p in enumerate(model.pieces)
        if p.type == USER_DEFINED and i not in added
    ]
    specials = [
        AddedToken(t["content"], normalized=False, special=bool(t.get("special", True)))
        for _, t in sorted(added.items())
    ]
    tokenizer.add_tokens(user)
    tokenizer.add_special_tokens([t for t in specials if t.special])
    tokenizer.add_tokens([t for t in specials if not t.special])
    return tokenizer


def fast_tokenizer(folder: str | Path):
    """The SentencePiece model of a checkpoint folder (tokenizer.model, tokenizer_config.json,
    special_tokens_map.json) as (PreTrainedTokenizerFast, notes): its special tokens, the `<s>`
    template (add_bos_token / add_eos_token of the config, default BOS only), and the model's
    settings the fast pipeline leaves out (`conversion_notes`)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    model = read_model((folder / "tokenizer.model").read_bytes())
    added = _added_tokens(folder)
    backend = backend_tokenizer(model, added)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    specials_path = folder / "special_tokens_map.json"
    specials = json.loads(specials_path.read_text()) if specials_path.is_file() else {}
    names = {}
    for key, default in (("bos", "<s>"), ("eos", "</s>"), ("unk", "<unk>"), ("pad", "</s>")):
        given = config.get(f"{key}_token") or specials.get(f"{key}_token")
        names[key] = _token_text(given) or default
    add_bos = config.get("add_bos_token", True)
    add_eos = config.get("add_eos_token", False)
    single = " ".join([*(["$bos:0"] if add_bos else []), "$A:0", *(["$eos:0"] if add_eos else [])])
    pair = f"{single} " + " ".join(
        [*(["$bos:1"] if add_bos else []), "$B:1", *(["$eos:1"] if add_eos else [])]
    )
    used = {k: names[k] for k, on in (("bos", add_bos), ("eos", add_eos)) if on}
    for key, text in used.items():
        single, pair = single.replace(f"${key}", text), pair.replace(f"${key}", text)
    backend.post_processor = TemplateProcessing(
        single=single,
        pair=pair,
        special_tokens=[(text, backend.token_to_id(text)) for text in dict.fromkeys(used.values())],
    )
    extra = [
        t["content"]
        for _, t in sorted(added.items())
        if t.get("special", True) and t["content"] not in names.values()
    ]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=names["bos"],
        eos_token=names["eos"],
        unk_token=names["unk"],
        pad_token=names["pad"],
        additional_special_tokens=extra,
        clean_up_tokenization_spaces=False,
    ), conversion_notes(model)


def conversion_notes(model: SpModel) -> list[str]:
    """Settings of the SentencePiece model the fast pipeline does not apply (as InternLM2's own
    fast converter does not): said in the log, not silently dropped."""
    notes = []
    if model.precompiled_charsmap:
        notes.append("the model's normalisation rules (precompiled_charsmap) are not applied")
    if model.remove_extra_whitespaces:
        notes.append("remove_extra_whitespaces is set: runs of spaces are kept, as in the fast one")
    return notes
