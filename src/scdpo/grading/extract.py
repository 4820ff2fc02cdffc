"""Finding the final answer in a solution text and the gold answer in a dataset record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_GSM8K_RE = re.compile(r"####\s*(.*)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _braced(text: str, start: int) -> str | None:
    """Content of the brace group opening at text[start], nested braces handled."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]  # an escaped brace (\{ or \}) neither opens nor closes a group
        if ch == "{" and text[i - 1 : i] != "\\":
            depth += 1
        elif ch == "}" and text[i - 1 : i] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def extract_answer(solution: str) -> str | None:
    """Final answer of a solution text: the content of the LAST \\boxed{...} (or \\fbox{...}).

    Nested braces are handled; `\\boxed 5` (no braces) yields the next token. None when there is
    no box, or when the last one is never closed (a truncated generation: an earlier box is not
    its final answer).
    """
    matches = list(_BOX_RE.finditer(solution))
    if not matches:
        return None
    end = matches[-1].end()
    if solution[end : end + 1] == "{":
        content = _braced(solution, end)
        return None if content is None else content.strip()
    token = re.match(r"[^\s$]+", solution[end:])
    return token.group(0) if token else None


def gsm8k_answer(solution: str) -> str | None:
    """The number after the last `#### ` of a GSM8K solution, commas dropped.

    Some lines carry stray words (`#### the300`), so the last number on the line is taken.
    """
    lines = _GSM8K_RE.findall(solution)
    if not lines:
        return None
    numbers = _NUMBER_RE.findall(lines[-1])
    return numbers[-1].replace(",", "") if numbers else lines[-1].strip() or None


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
