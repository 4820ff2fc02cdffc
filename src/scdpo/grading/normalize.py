"""Normalisation of answer strings and known dataset-quirk repairs.

Everything here is cheap string work: it runs in-process for every verdict, so the common cases
(integers, decimals, fractions, percentages) are decided without sympy. Units live in `units`,
notations math-verify cannot parse in `notation`, exact values in `numbers` (re-exported here).
"""

from __future__ import annotations

import re
from functools import lru_cache

from scdpo.grading.chinese import PROTECTED, chinese_numbers
from scdpo.grading.notation import (
    matrices,
    python_notation,
    repeating_decimals,
    scientific,
    spaced_mixed,
)
from scdpo.grading.numbers import Number as Number
from scdpo.grading.numbers import numeric_value as numeric_value
from scdpo.grading.numbers import numeric_verdict as numeric_verdict
from scdpo.grading.units import (
    DEGREE_RE,
    replace_text,
    strip_signs,
    strip_trailing_units,
)

# --- known quirks of widely circulated benchmark files ----------------------------------------
# The MATH500 `answer` field lost characters when whitespace was stripped from it (9 of 500):
#   \begin{pmatrix}48/65\6/65\end{pmatrix}   was  \begin{pmatrix} 48/65 \\ 6/65 \end{pmatrix}
#   1+\sqrt{}2,\1-\sqrt{}2                  was  1+\sqrt 2,\ 1-\sqrt 2
# A lone backslash before a digit or sign is never valid LaTeX, so it is a collapsed row
# separator inside a matrix and a collapsed `\ ` (space) elsewhere; `\sqrt{}X` is `\sqrt X`.
_ENV_RE = re.compile(r"\\(begin|end)\{([a-zA-Z*]+)\}")
_MATRIX_ENVS = {"matrix", "pmatrix", "bmatrix", "vmatrix", "Bmatrix", "Vmatrix", "array"}
_LONE_BACKSLASH_RE = re.compile(r"\\\\|\\(?=[0-9+\-.])")
_EMPTY_SQRT_RE = re.compile(r"\\sqrt\{\}\s*(\\[a-zA-Z]+|\w)")


def _repair_lone_backslashes(text: str, replacement: str) -> str:
    return _LONE_BACKSLASH_RE.sub(
        lambda m: m.group(0) if len(m.group(0)) == 2 else replacement, text
    )


def _environments(text: str) -> list[tuple[int, int, str]]:
    """Outermost `\\begin{X}...\\end{X}` spans (start, end, X), in one linear scan."""
    spans, stack = [], []
    for m in _ENV_RE.finditer(text):
        if m.group(1) == "begin":
            stack.append((m.start(), m.group(2)))
        elif stack and stack[-1][1] == m.group(2):
            start, name = stack.pop()
            if not stack:
                spans.append((start, m.end(), name))
    return spans


def repair_quirks(answer: str) -> str:
    """Undo the known damage of the MATH500 answer field (see the comment above)."""
    if "\\" not in answer:
        return answer
    answer = _EMPTY_SQRT_RE.sub(r"\\sqrt{\1}", answer)
    out, pos = [], 0
    for start, end, name in _environments(answer):
        out.append(_repair_lone_backslashes(answer[pos:start], " "))
        env = answer[start:end]
        out.append(_repair_lone_backslashes(env, "\\\\") if name in _MATRIX_ENVS else env)
        pos = end
    out.append(_repair_lone_backslashes(answer[pos:], " "))
    return "".join(out)


# --- normalisation ----------------------------------------------------------------------------
# Every pattern here is linear in the answer's length (no search back over the text before a
# match, bounded passes for nesting): normalisation runs on whole looping generations too.
_CONNECTIVE_RE = re.compile(r"(?<=\S)\s+(?:or|and)\s+(?=\S)|(?<=\d)(?:或者?|和|与|及)(?=[-\d])")
_MAX_PASSES = 4  # nesting levels of \boxed{} unwrapped; deeper is not an answer
# Full-width forms (`１８％`, `（3，4）`) are their ASCII twins; `、` enumerates, `。` ends.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FULL_WIDTH.update({0x3001: ",", 0x3000: " ", 0x2212: "-", 0x00D7: "\\times ", 0x00F7: "\\div "})
_FULL_WIDTH.update({0x2248: "\\approx "})  # ≈
_CJK_CHARS = f"\u3000-\u303f\u4e00-\u9fff{PROTECTED}"
_CJK_RUN_RE = re.compile(rf"[{_CJK_CHARS}]+")
_CJK_PUNCTUATION = "".join(map(chr, range(0x3000, 0x3040)))
_ANSWER_WORD_RE = re.compile(r"^\s*(?:答案?|所以)[是为:]?\s*")
_SPACING_RE = re.compile(
    r"(?<!\\)\\[,;:!> ]|~|\\(?:q?quad|displaystyle|left|right|[bB]ig{1,2}[lr]?)(?![a-zA-Z])"
)
# `\approx 3.14`, `approximately 3.14`: the value (a name before `\approx` goes as before `=`)
_LEADING_APPROX_RE = re.compile(r"^(?:\\approx|approx\.?|approximately|about|around)\s*", re.I)
_VAR = r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?"
# `x = 3`, `x \approx 3`, `(x, y) = (3, 4)`: a name (or a tuple of names) set to the answer
_ASSIGN_RE = re.compile(
    rf"^(?:{_VAR}|\(\s*{_VAR}(?:\s*,\s*{_VAR})+\s*\))\s*(?:=|\\approx(?![a-zA-Z]))\s*(?=[^=]+$)"
)
_CHOICE_RE = re.compile(r"^\(?([A-E])\)?[.:]?$")
# `25_{6}`, `A3_{16}`: digits (one at least, or two letters, so `C_{16}` stays a name), a base
_BASE_RE = re.compile(
    r"(?<![\w\\^_{])((?=[0-9A-F]*[0-9])[0-9A-F]{1,40}|[A-F]{2,40})_\{?(\d{1,2})\}?(?![\w{])"
)
# A thousands separator is a comma with no space after it: `1,100` is 1100, `1, 100` a list.
_THOUSANDS_RE = re.compile(r"^([-+]?)(\d{1,3}(?:,\d{3})+)(\.\d+)?(%?)$")
_TRAILING_ZEROS_RE = re.compile(r"(?<![\d.])(?:(\d+\.\d*?[1-9])0+|(\d+)\.0+)(?!\d)")
_KEEP_SPACE_RE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])")
_CACHED_LENGTH = 2000  # longer strings are normalised uncached (a cache of 1 MB keys is a leak)


def _unwrap_boxes(answer: str) -> str:
    for _ in range(_MAX_PASSES):
        m = re.fullmatch(r"\s*\\(?:boxed|fbox)\s*\{(.*)\}\s*", answer, flags=re.S)
        if not m:
            break
        answer = m.group(1)
    return answer


def _strip_delimiters(answer: str) -> str:
    answer = answer.strip().strip("$").strip()
    for left, right in (("\\[", "\\]"), ("\\(", "\\)")):
        if answer.startswith(left) and answer.endswith(right):
            answer = answer[2:-2].strip()
    return answer


def _base_to_decimal(m: re.Match[str]) -> str:
    digits, base = m.group(1), int(m.group(2))
    if not 2 <= base <= 16 or any(int(d, 16) >= base for d in digits):
        return m.group(0)
    return str(int(digits, base))


def _strip_zeros(m: re.Match[str]) -> str:
    return m.group(1) or m.group(2)


def _strip_cjk(answer: str) -> str:
    """Chinese words around a value go (`答：共有12个。` is 12); between values they separate
    (`小明12个，小红15个` is the list 12, 15). An answer that is all words loses only its
    punctuation (`甲。` is 甲)."""
    core = _CJK_RUN_RE.sub("\0", answer).lstrip("\0 :,;!?").rstrip("\0 :,;!?.")
    if not core.replace("\0", "").strip():  # words only: `答：甲。` is 甲
        return _ANSWER_WORD_RE.sub("", answer).strip(_CJK_PUNCTUATION + " :,;.!?")
    return re.sub(r"(?<!\s)\s*\0[\0\s,;:.]*", ",", core)


def _chinese(answer: str) -> str:
    """Chinese numbers, then the words around them. A label (`第三名`) is a value only when the
    sentence has no other: `答：第3天修了30米` is 30, `答：小明是第三名` is 3."""
    text = chinese_numbers(answer, _strip_cjk)
    if not _CJK_RUN_RE.search(text) or not re.search(r"[第期周级]", answer):
        return text  # a value was found (or there is no label)
    return chinese_numbers(answer, _strip_cjk, labels=False)


def normalize(answer: str) -> str:
    """Canonical form of an answer string, used for the exact fast path and fed to math-verify."""
    if len(answer) <= _CACHED_LENGTH:
        return _normalize_cached(answer)
    return _normalize(answer)


@lru_cache(maxsize=4096)
def _normalize_cached(answer: str) -> str:
    return _normalize(answer)


def _latex(answer: str) -> str:
    """Delimiters, boxes, quirks, shorthand commands, dollars, digit grouping, degrees, text."""
    answer = _strip_delimiters(_unwrap_boxes(answer.strip().translate(_FULL_WIDTH)))
    answer = repair_quirks(answer)
    answer = re.sub(r"\\[dtc]frac", r"\\frac", answer)
    answer = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", answer)  # \frac12
    answer = re.sub(r"\\sqrt(?:\s*(\d)|\s+([a-zA-Z]))", r"\\sqrt{\1\2}", answer)  # \sqrt 2
    answer = answer.replace("{,}", ",").replace("\\%", "%").replace("\\$", "").replace("$", "")
    answer = re.sub(r"(?<=\d)\\,(?=\d{3})", "", answer)  # 1\,000 thin-space grouping
    answer = re.sub(r"(?<=\d),\\!(?=\d{3})", ",", answer)  # 1,\!000 (MATH)
    answer = DEGREE_RE.sub("", answer)
    return strip_signs(replace_text(answer))


def _words(answer: str) -> str:
    """Chinese words, connectives, spacing, scale words and units around the values."""
    if _CJK_RUN_RE.search(answer):
        answer = _chinese(answer)
    answer = _CONNECTIVE_RE.sub(",", answer)  # `5 or 6` as `5 \text{ or } 6`
    answer = re.sub(r",(?:\s*,)+", ",", answer)  # `1, 2, or 3`: one separator
    answer = repeating_decimals(_SPACING_RE.sub(" ", answer))  # before a final `.` goes
    answer = matrices(python_notation(scientific(spaced_mixed(answer))))
    answer = strip_trailing_units(answer.strip())
    answer = answer.strip().rstrip(".").strip()
    return _ASSIGN_RE.sub("", _LEADING_APPROX_RE.sub("", answer))


_PLAIN_NUMBER_RE = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")


def _normalize(answer: str) -> str:
    if _PLAIN_NUMBER_RE.fullmatch(answer):  # most answers: nothing but trailing zeros to do
        return _TRAILING_ZEROS_RE.sub(_strip_zeros, answer.strip())
    answer = _words(_latex(answer))
    thousands = _THOUSANDS_RE.match(answer)  # before spaces go: `1, 100` is no thousands
    if thousands:
        answer = "".join(g or "" for g in thousands.groups()).replace(",", "")
    answer = _KEEP_SPACE_RE.sub("\\1\0", answer)  # `\pi r` keeps its space, `2 \pi` does not
    answer = re.sub(r"\s+", "", answer).replace("\0", " ")
    choice = _CHOICE_RE.match(answer)
    if choice:
        return choice.group(1)
    answer = _BASE_RE.sub(_base_to_decimal, answer)
    answer = _TRAILING_ZEROS_RE.sub(_strip_zeros, answer)
    return re.sub(r"(?<![\d.])\.(?=\d)", "0.", answer)
