"""Solutions as lists of blocks: marker tokens, serialisation, split points and sample filters.

A code-integrated ("code") solution is a list of `text`, `code` and `execution` blocks; a
chain-of-thought ("cot") solution has `text` blocks only. Both serialise with the method's marker
tokens, so one generation loop, one grader and one pair builder serve both formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TEXT = "<|text|>"
CODE = "<|code|>"
EXECUTION = "<|execution|>"
END_OF_BLOCK = "<|endofblock|>"
END_OF_MESSAGE = "<|endofmessage|>"

MARKERS = (SYSTEM, USER, ASSISTANT, TEXT, CODE, EXECUTION, END_OF_BLOCK, END_OF_MESSAGE)
BLOCK_KINDS = {TEXT: "text", CODE: "code", EXECUTION: "execution"}
KIND_MARKER = {kind: marker for marker, kind in BLOCK_KINDS.items()}

DEFAULT_SYSTEM = "Solve the problem step by step. Put the final answer in \\boxed{}."

_MARKER_RE = re.compile("|".join(re.escape(m) for m in MARKERS))


@dataclass(frozen=True)
class Block:
    kind: str  # "text" | "code" | "execution"
    content: str

    def render(self) -> str:
        return f"{KIND_MARKER[self.kind]}{self.content}{END_OF_BLOCK}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "content": self.content}

    @staticmethod
    def from_json(data: dict) -> Block:
        return Block(data["kind"], data["content"])


def render_prompt(question: str, system: str = DEFAULT_SYSTEM) -> str:
    """The conversation up to and including the assistant marker."""
    return (
        f"{SYSTEM}{TEXT}{system}{END_OF_BLOCK}{END_OF_MESSAGE}"
        f"{USER}{TEXT}{question}{END_OF_BLOCK}{END_OF_MESSAGE}{ASSISTANT}"
    )


def render_blocks(blocks: list[Block]) -> str:
    return "".join(block.render() for block in blocks)


def render_solution(blocks: list[Block]) -> str:
    """A finished answer: its blocks and the end-of-message marker."""
    return render_blocks(blocks) + END_OF_MESSAGE


def parse_generated_block(text: str) -> Block:
    """Turn one generation call's output (up to a stop marker, excluded) into a block.

    The model opens each block with its kind marker; output without one counts as text so that a
    malformed block is graded (and filtered as noisy) rather than crashing the loop.
    """
    for marker, kind in BLOCK_KINDS.items():
        if text.startswith(marker):
            return Block(kind, text[len(marker) :])
    return Block("text", text)


def final_text(blocks: list[Block]) -> str:
    """The text a grader reads: every block's content (the last \\boxed{} wins)."""
    return "\n".join(block.content for block in blocks)


def split_points(blocks: list[Block]) -> list[int]:
    """Indices k where a step-controlled continuation may start after blocks[0..k].

    Per the method: after a `text` or `execution` block (never right after a `code` block, whose
    execution is not the model's to write), from the first assistant block to the third-from-last.
    The prefix always keeps at least one block, so no split duplicates a naive sample.
    """
    last = len(blocks) - 3
    return [k for k in range(0, last + 1) if blocks[k].kind in ("text", "execution")]


def cot_blocks(solution_text: str) -> list[Block]:
    """A chain-of-thought solution's steps: text blocks split on blank lines."""
    steps = [step.strip() for step in re.split(r"\n\s*\n", solution_text)]
    return [Block("text", step) for step in steps if step]


# --- the method's filters on samples -------------------------------------------------------------

ERROR_PATTERNS = re.compile(r"error|apolog|sorry|mistake|traceback|incorrect", re.IGNORECASE)


@dataclass(frozen=True)
class NoiseLimits:
    max_blocks: int = 24
    max_block_chars: int = 3000


def is_noisy(blocks: list[Block], limits: NoiseLimits = NoiseLimits()) -> bool:
    """Too many blocks, an over-long block, or a marker token inside a block's content."""
    if len(blocks) > limits.max_blocks:
        return True
    return any(
        len(block.content) > limits.max_block_chars or _MARKER_RE.search(block.content)
        for block in blocks
    )


def mentions_error(blocks: list[Block]) -> bool:
    """An error, apology or correction anywhere, or a traceback in an execution block."""
    return any(ERROR_PATTERNS.search(block.content) for block in blocks)
