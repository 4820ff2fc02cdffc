"""Finding the final answer in a solution text and the gold answer in a dataset record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scdpo.grading.statements import gsm8k_answer, output_answer, refers_to_output, stated_answer

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_MARKER = "<|"  # pipeline block markers: a text carrying them is a solution, not a bare answer


_BRACE_RE = re.compile(r"\\[{}]|[{}]")


def _braced(text: str, start: int) -> str | None:
    """Content of the brace group opening at text[start], nested braces handled."""
    depth = 0
    for m in _BRACE_RE.finditer(text, start):
        ch = m.group(0)  # an escaped brace (\{ or \}) neither opens nor closes a group
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : m.start()]
    return None


def _box_at(solution: str, match: re.Match[str]) -> tuple[str, int] | None:
    """(content, end) of the box whose command `match` found; None when never closed."""
    end = match.end()
    if solution[end : end + 1] == "{":
        content = _braced(solution, end)
        return None if content is None else (content.strip(), end + len(content) + 2)
    token = re.match(r"[^\s$]+", solution[end:])
    return (token.group(0), end + token.end()) if token else None


def extract_answer(solution: str) -> str | None:
    """Final answer of a solution text: the content of the LAST \\boxed{...} (or \\fbox{...}).

    Nested braces are handled; `\\boxed 5` (no braces) yields the next token. None when there is
    no box, or when the last one is never closed (a truncated generation: an earlier box is not
    its final answer).
    """
    matches = list(_BOX_RE.finditer(solution))
    if not matches:
        return None
    box = _box_at(solution, matches[-1])
    return None if box is None else box[0]


# Between boxes that together state one answer: `\boxed{2}, \boxed{-3}`, `\boxed{2} or \boxed{3}`,
# `$x = \boxed{2}$ and $x = \boxed{-3}$` (the same name before each)
_MAX_GAP = 40  # characters between two such boxes (the gap pattern backtracks on long runs)
_MAX_BOXES = 64  # boxes joined at most; more in a row is a loop, not an answer
_BOX_GAP_RE = re.compile(r"[\s$,;]*(?:(?:\\text\{\s*)?(?:and|or|或|和)\}?)?[\s$,;]*")
_NAME_BEFORE_RE = re.compile(r"((?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?)\s*=\s*\$?\s*$")


def _name_before(solution: str, start: int) -> tuple[str | None, int]:
    """The name set to the box at `start` (`x = \\boxed{2}`) and where that name starts."""
    m = _NAME_BEFORE_RE.search(solution, max(0, start - 20), start)
    return (m.group(1), m.start()) if m else (None, start)


def boxed_answers(solution: str) -> str | None:
    """The last box, joined with the boxes right before it that only commas or `and` / `or`
    separate (`\\boxed{2}, \\boxed{-3}` is the list 2, -3), the same name set to each; the same
    answer boxed twice is one answer. None as for `extract_answer`."""
    matches = list(_BOX_RE.finditer(solution))
    if not matches:
        return None
    last = _box_at(solution, matches[-1])
    if last is None:
        return None
    values, start = [last[0]], matches[-1].start()
    name: str | None = ""  # looked up only when a box comes close before the last one
    for match in reversed(matches[-_MAX_BOXES:-1]):
        box = _box_at(solution, match)
        if box is None or not 0 <= start - box[1] <= _MAX_GAP:
            break
        if name == "":
            name, start = _name_before(solution, start)
        if not _BOX_GAP_RE.fullmatch(solution, box[1], start):
            break
        previous, start = _name_before(solution, match.start())
        if previous != name:
            break
        if re.sub(r"\s", "", box[0]) not in {re.sub(r"\s", "", v) for v in values}:
            values.append(box[0])
    return ", ".join(reversed(values))


_BLOCK_RE = re.compile(r"<\|(text|code|execution)\|>(.*?)(?=<\|)", re.S)


def _code_answer(solution: str) -> str | None:
    """A code-integrated solution (pipeline markers): the last statement of its text blocks;
    else, when its last text only refers to it, the last execution output's answer."""
    blocks = _BLOCK_RE.findall(solution + "<|")
    stated = stated_answer("\n".join(content for kind, content in blocks if kind == "text"))
    if stated is not None:
        return stated
    outputs = [i for i, (kind, _) in enumerate(blocks) if kind == "execution"]
    if not outputs:
        return None
    after = "\n".join(content for kind, content in blocks[outputs[-1] :] if kind == "text")
    return output_answer(blocks[outputs[-1]][1]) if refers_to_output(after) else None


_ANSWER_IS_RE = re.compile(r"the answer is\s*:?", re.IGNORECASE)


def answer_is(solution: str) -> str | None:
    """A dataset's gold written as MetaMath's ending: what follows the last `The answer is:` on
    its line, without a final full stop or math-mode dollars (read as written, for gold answers;
    a model's answer goes through `predicted_answer`)."""
    matches = list(_ANSWER_IS_RE.finditer(solution))
    if not matches:
        return None
    line = solution[matches[-1].end() :].split("\n", 1)[0].strip()
    line = line.rstrip("。．.").strip().strip("$").strip()
    return line or None


def predicted_answer(solution: str) -> str | None:
    """The final answer a solution states, or None when it states none.

    The last box (a boxed answer beats any answer phrase); else the last answer statement
    (`####`, `The answer is:`, Minerva's `The final answer is`, `答：`; see `statements`), in the
    text blocks of a code-integrated solution or its last execution output when the text only
    refers to it; else the text itself as a bare answer, unless it is a whole solution (pipeline
    markers or several lines).
    """
    if "\\boxed" in solution or "\\fbox" in solution:
        return boxed_answers(solution)  # None when the last box is unclosed (truncated)
    if _MARKER in solution:
        return _code_answer(solution)
    found = stated_answer(solution)
    if found is not None:
        return found
    if "\n" in solution.strip():
        return None
    return solution


def _field(record: Mapping[str, Any], name: str) -> Any:
    extra = record.get("extra")
    if isinstance(extra, Mapping) and extra.get(name) not in (None, ""):
        return extra[name]
    return record.get(name)


def reference_answer(record: Mapping[str, Any], dataset: str | None = None) -> str:
    """The gold answer of a dataset record.

    The `extra.answer` / `answer` field when present, else the GSM8K `#### N` of the solution,
    else the MATH solution's last box. `dataset` is accepted for dataset-specific formats; the
    formats seen so far are all recognised from the record itself. Raises ValueError if none.
    """
    answer = _field(record, "answer")
    if answer not in (None, ""):
        return str(answer).strip()
    solution = _field(record, "solution")
    if isinstance(solution, str):
        found = gsm8k_answer(solution) if "####" in solution else extract_answer(solution)
        if found:
            return found
    raise ValueError(f"no reference answer in record of dataset {dataset!r}: {sorted(record)}")
