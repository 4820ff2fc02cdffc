"""Prompt encoding for the transformers engine: token ids of texts that share most pieces."""

from __future__ import annotations

import logging
import re

from scdpo.solution import MARKERS
from scdpo.tokens import leading_special_ids

log = logging.getLogger(__name__)


class PieceEncoder:
    """Token ids of a prompt as training saw it (scdpo.modeling.prompt_ids: the tokenizer's leading
    special tokens, e.g. BOS, then the text), tokenising only the pieces between marker tokens
    not seen before.

    The marker tokens are special tokens, which the tokenizer splits off before anything else, so
    a text's ids are its pieces' ids joined; the frontier's prompts share most pieces (system
    prompt, question, earlier blocks). The first texts are also tokenised whole and compared: a
    tokenizer for which this does not hold is used whole from then on.
    """

    def __init__(self, tokenizer, checks: int = 32) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.marker_ids = {m: vocab[m] for m in MARKERS if m in vocab}
        self.marker_split = re.compile("(" + "|".join(map(re.escape, self.marker_ids)) + ")")
        self.by_pieces, self.checks_left = True, checks
        self.leading = leading_special_ids(tokenizer)
        self.encoded: dict[str, list[int]] = {}  # texts counted, not yet taken
        self.pieces: dict[str, list[int]] = {}

    def clear(self) -> None:
        self.encoded.clear()
        self.pieces.clear()

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def encode(self, text: str) -> list[int]:
        ids = self.encoded.get(text)
        if ids is not None:
            return ids
        if self.by_pieces:
            ids = self._by_pieces(text)
            if self.checks_left:
                self.checks_left -= 1
                whole = self.tokenize(text)
                if whole != ids:
                    log.warning("tokenising between marker tokens differs: tokenising whole texts")
                    self.by_pieces, ids = False, whole
        else:
            ids = self.tokenize(text)
        ids = self.leading + ids
        self.encoded[text] = ids  # for the `take` that follows `count_tokens`
        return ids

    def take(self, text: str) -> list[int]:
        """The ids of `text`, forgetting the text (a prompt is admitted once)."""
        ids = self.encode(text)
        self.encoded.pop(text, None)
        return ids

    def _by_pieces(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self.marker_split.split(text):
            marker = self.marker_ids.get(piece)
            if marker is not None:
                ids.append(marker)
            elif piece:
                known = self.pieces.get(piece)
                if known is None:
                    known = self.pieces[piece] = self.tokenize(piece)
                ids += known
        return ids
