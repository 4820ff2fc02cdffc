"""Finding the final answer in a solution text and the gold answer in a dataset record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_STRAY_WORD_RE = re.compile(r"^[A-Za-z]{2,}\s*(?=[-+$\d])")  # `#### the300`
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
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


# Between boxes that together state one answer: `\boxed{2}, \boxed{-3}`, `\boxed{2} or \boxed{3}`
_MAX_GAP = 40  # characters between two such boxes (the gap pattern backtracks on long runs)
_BOX_GAP_RE = re.compile(r"[\s$,;]*(?:(?:\\text\{\s*)?(?:and|or|或|和)\}?)?[\s$,;]*")


def boxed_answers(solution: str) -> str | None:
    """The last box, joined with the boxes right before it that only commas or `and` / `or`
    separate (`\\boxed{2}, \\boxed{-3}` is the list 2, -3); None as for `extract_answer`."""
    matches = list(_BOX_RE.finditer(solution))
    if not matches:
        return None
    last = _box_at(solution, matches[-1])
    if last is None:
        return None
    values, start = [last[0]], matches[-1].start()
    for match in reversed(matches[:-1]):
        box = _box_at(solution, match)
        if box is None or not 0 <= start - box[1] <= _MAX_GAP:
            break
        if not _BOX_GAP_RE.fullmatch(solution, box[1], start):
            break
        values.append(box[0])
        start = match.start()
    return ", ".join(reversed(values))


def gsm8k_answer(solution: str) -> str | None:
    """What follows the last `####` of a solution, on its line: `#### 3/4` is 3/4, not 4.

    A stray word glued to the number (`#### the300`) and a final full stop are dropped, and a
    thousands-separated integer (`#### 2,125`) loses its commas (`1, 100` is a list and stays).
    """
    start = solution.rfind("####")
    if start < 0:
        return None
    line = solution[start + 4 :].split("\n", 1)[0].strip()
    line = _STRAY_WORD_RE.sub("", line).rstrip("。．.").strip()
    if _THOUSANDS_RE.fullmatch(line):
        line = line.replace(",", "")
    return line or None


def chinese_answer(solution: str) -> str | None:
    """The last `答：...` of a solution, to the end of its line (`答：共有12个。`)."""
    start = max(solution.rfind("答："), solution.rfind("答:"))
    if start < 0:
        return None
    return solution[start:].split("\n", 1)[0].strip() or None


_ANSWER_IS_RE = re.compile(r"the answer is\s*:?", re.IGNORECASE)


def answer_is(solution: str) -> str | None:
    """What follows the last `The answer is:` on its line (MetaMath's chain-of-thought ending),
    without a final full stop or math-mode dollars."""
    matches = list(_ANSWER_IS_RE.finditer(solution))
    if not matches:
        return None
    line = solution[matches[-1].end() :].split("\n", 1)[0].strip()
    line = line.rstrip("。．.").strip().strip("$").strip()
    return line or None


def predicted_answer(solution: str) -> str | None:
    """The final answer a solution states, or None when it states none.

    The last box; else the last `#### ` line (GSM8K); else the last `The answer is:` line
    (MetaMath); else the last `答：` line; else the text itself as a bare answer, unless it is a
    whole solution (pipeline markers or several lines).
    """
    if "\\boxed" in solution or "\\fbox" in solution:
        return boxed_answers(solution)  # None when the last box is unclosed (truncated)
    for find in (gsm8k_answer, answer_is, chinese_answer):
        found = find(solution)
        if found is not None:
            return found
    if _MARKER in solution or "\n" in solution.strip():
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
