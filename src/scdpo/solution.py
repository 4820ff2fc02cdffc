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
    """The text a grader reads: the blocks with their markers, so that it takes answer statements
    from text blocks only, and the last execution output where the text only refers to it."""
    return render_blocks(blocks)


def split_points(blocks: list[Block]) -> list[int]:
    """Indices k where a step-controlled continuation may start after blocks[0..k].

    Per the method: after a `text` or `execution` block (never right after a `code` block, whose
    execution is not the model's to write), from the first assistant block to the third-from-last.
    The prefix always keeps at least one block, so no split duplicates a naive sample.
    """
    last = len(blocks) - 3
    return [k for k in range(0, last + 1) if blocks[k].kind in ("text", "execution")]


# --- chain-of-thought steps ----------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# MetaMathQA ends every response with `The answer is: X`; its GSM8K-derived rows also keep the
# `#### X` line of GSM8K. A solution ending so is split into lines even if it has blank lines.
_METAMATH_END = re.compile(r"The answer is:")
_ANSWER_LINE = re.compile(r"^\s*(?:####|The answer is\b)")
_DISPLAY_START = re.compile(r"^\s*(?:\$\$|\\\[|\\begin\{)")
# Display math that may span lines: $$...$$, \[...\] and \begin{env}...\end{env}. A `\\[2pt]`
# line break inside an align is not an opening bracket (the backslash before it).
_DOLLARS = re.compile(r"(?<!\\)\$\$")
_OPEN_BRACKET = re.compile(r"(?<!\\)\\\[")
_CLOSE_BRACKET = re.compile(r"(?<!\\)\\\]")
_BEGIN_ENV = re.compile(r"\\begin\{")
_END_ENV = re.compile(r"\\end\{")


def _display_depth(line: str, depth: tuple[int, int, int]) -> tuple[int, int, int]:
    """(open $$ mod 2, open \\[, open environments) after `line`."""
    dollars, brackets, envs = depth
    dollars = (dollars + len(_DOLLARS.findall(line))) % 2
    brackets = max(
        0, brackets + len(_OPEN_BRACKET.findall(line)) - len(_CLOSE_BRACKET.findall(line))
    )
    envs = max(0, envs + len(_BEGIN_ENV.findall(line)) - len(_END_ENV.findall(line)))
    return dollars, brackets, envs


def _line_steps(solution_text: str) -> list[str]:
    """One step per line of reasoning: a display equation stays whole (never split inside
    $$...$$, \\[...\\] or an environment) and belongs to the line that introduces it; the final
    `#### X` / `The answer is: X` lines belong to the last step."""
    units: list[list[str]] = []
    depth = (0, 0, 0)
    for line in solution_text.split("\n"):
        if any(depth):
            units[-1].append(line)  # inside display math: the same step
        elif line.strip():
            if units and _DISPLAY_START.match(line):
                units[-1].append(line)  # a display continues the sentence before it
            else:
                units.append([line])
        depth = _display_depth(line, depth)
    while len(units) > 1 and _ANSWER_LINE.match(units[-1][0]):
        answer = units.pop()
        units[-1] += answer
    return ["\n".join(unit).strip() for unit in units]


def cot_blocks(solution_text: str) -> list[Block]:
    """A chain-of-thought solution's steps as text blocks.

    Paragraphs separated by blank lines are the steps, as before. A solution without blank lines,
    or one that ends on MetaMathQA's `The answer is:` line (its steps are single lines, e.g.
    `...= $500\\nSince John ...\\n#### 1200\\nThe answer is: 1200`), has one step per line of
    reasoning instead (`_line_steps`): cut at blank lines only, nearly every MetaMathQA response
    would be one block without a split point.
    """
    if _PARAGRAPH_BREAK.search(solution_text) and not _ends_like_metamath(solution_text):
        steps = [step.strip() for step in _PARAGRAPH_BREAK.split(solution_text)]
    else:
        steps = _line_steps(solution_text)
    return [Block("text", step) for step in steps if step]


def _ends_like_metamath(solution_text: str) -> bool:
    lines = [line for line in solution_text.strip().split("\n") if line.strip()]
    return bool(lines) and bool(_METAMATH_END.match(lines[-1].strip()))


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
