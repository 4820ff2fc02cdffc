"""Normalisation of answer strings, known dataset-quirk repairs and exact numeric values.

Everything here is cheap string work: it runs in-process for every verdict, so the common cases
(integers, decimals, fractions, percentages) are decided without sympy.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from scdpo.grading.chinese import chinese_numbers

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
_TEXT_CMD_RE = re.compile(
    r"\\(text|textbf|textit|textrm|mathrm|mathbf|mbox|textnormal)\s*\{([^{}]*)\}(\^\{?\d\}?)?"
)
_BOLD = {"textbf", "mathbf"}  # vectors and emphasis, never units
_CONNECTIVES = {"or", "and", "或", "和", "或者", "与", "及"}
_CONNECTIVE_RE = re.compile(r"(?<=\S)\s+(?:or|and)\s+(?=\S)|(?<=\d)(?:或者?|和|与|及)(?=[-\d])")
_MAX_PASSES = 4  # nesting levels of \text{} and \boxed{} unwrapped; deeper is not an answer
_UNIT_WORDS = (
    "cm|mm|km|inch|inches|ft|feet|foot|yd|yards?|miles?|meters?|metres?|centimeters?|"
    "kilometers?|units?|sq|square|cubic|degrees?|dollars?|cents?|hours?|hrs?|minutes?|mins?|"
    "seconds?|secs?|days?|weeks?|months?|years?|kg|grams?|kilograms?|pounds?|lbs?|ounces?|oz|"
    "liters?|litres?|ml|gallons?|mph|people|students|eggs|points?|ways|edges|pages|"
    "apples|cookies|marbles|books|coins|times"
)
_TRAILING_UNIT_RE = re.compile(rf"(?<=[\d}}])(?:\s*(?:{_UNIT_WORDS})(?:\^\{{?[23]\}}?)?\.?)+$")
# Full-width forms (`１８％`, `（3，4）`) are their ASCII twins; `、` enumerates, `。` ends.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FULL_WIDTH.update({0x3001: ",", 0x3000: " ", 0x2212: "-", 0x00D7: "\\times ", 0x00F7: "\\div "})
_CJK_CHARS = "\u3000-\u303f\u4e00-\u9fff"
_CJK_RUN_RE = re.compile(rf"[{_CJK_CHARS}]+")
_CJK_PUNCTUATION = "".join(map(chr, range(0x3000, 0x3040)))
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_SPACING_RE = re.compile(
    r"(?<!\\)\\[,;:!> ]|~|\\(?:q?quad|displaystyle|left|right|[bB]ig{1,2}[lr]?)(?![a-zA-Z])"
)
_VAR = r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?"
# `x = 3`, `(x, y) = (3, 4)`: a name (or a tuple of names) set to the answer
_ASSIGN_RE = re.compile(rf"^(?:{_VAR}|\(\s*{_VAR}(?:\s*,\s*{_VAR})+\s*\))\s*=\s*(?=[^=]+$)")
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


def _after_value(text: str, end: int) -> bool:
    """Whether text[:end] ends (spaces aside) in a value: a digit, `}`, `)` or `%`."""
    i = end - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    return i >= 0 and (text[i].isdigit() or text[i] in "})%")


def _replace_text(answer: str) -> str:
    """`\\text{}` and friends: connectives become commas, units after a value are dropped."""

    def repl(m: re.Match[str]) -> str:
        command, content, power = m.group(1), m.group(2).strip(), m.group(3) or ""
        if content.lower() in _CONNECTIVES:
            return ","  # `5 \text{ or } 6` is the list 5, 6, never 5
        unit = command not in _BOLD and not re.search(r"\d", content)
        if unit and _after_value(m.string, m.start()):
            return ""  # a unit after a value: `5 \text{ cm}`, `45 \text{ units}^2`
        return content + power

    for _ in range(_MAX_PASSES):
        answer, count = _TEXT_CMD_RE.subn(repl, answer)
        if not count:
            break
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
    if not core.replace("\0", "").strip():
        return answer.strip(_CJK_PUNCTUATION + " :,;.!?")
    return re.sub(r"(?<!\s)\s*\0[\0\s,;:.]*", ",", core)


def normalize(answer: str) -> str:
    """Canonical form of an answer string, used for the exact fast path and fed to math-verify."""
    if len(answer) <= _CACHED_LENGTH:
        return _normalize_cached(answer)
    return _normalize(answer)


@lru_cache(maxsize=4096)
def _normalize_cached(answer: str) -> str:
    return _normalize(answer)


def _normalize(answer: str) -> str:
    answer = _strip_delimiters(_unwrap_boxes(answer.strip().translate(_FULL_WIDTH)))
    answer = repair_quirks(answer)
    answer = re.sub(r"\\[dtc]frac", r"\\frac", answer)
    answer = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", answer)  # \frac12
    answer = re.sub(r"\\sqrt(?:\s*(\d)|\s+([a-zA-Z]))", r"\\sqrt{\1\2}", answer)  # \sqrt 2
    answer = answer.replace("{,}", ",").replace("\\%", "%").replace("\\$", "").replace("$", "")
    answer = re.sub(r"(?<=\d)\\,(?=\d{3})", "", answer)  # 1\,000 thin-space grouping
    answer = re.sub(r"(?<=\d),\\!(?=\d{3})", ",", answer)  # 1,\!000 (MATH)
    answer = _DEGREE_RE.sub("", answer)
    answer = _replace_text(answer)
    if _CJK_RUN_RE.search(answer):
        answer = _strip_cjk(chinese_numbers(answer))
    answer = _CONNECTIVE_RE.sub(",", answer)  # `5 or 6` as `5 \text{ or } 6`
    answer = re.sub(r",(?:\s*,)+", ",", answer)  # `1, 2, or 3`: one separator
    answer = _SPACING_RE.sub(" ", answer)
    answer = _TRAILING_UNIT_RE.sub("", answer.strip())
    answer = answer.strip().rstrip(".").strip()
    answer = _ASSIGN_RE.sub("", answer)
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


# --- exact numeric values -----------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    """An exact value; `percent` when written with %, `decimal` when written with a point."""

    value: Fraction
    percent: bool
    decimal: bool

    @property
    def scaled(self) -> Fraction:
        return self.value / 100 if self.percent else self.value


_FRAC_RE = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}|\\frac(\d)(\d)")
_MIXED_RE = re.compile(r"^(-?)(\d+)(?:\\frac\{(\d+)\}\{(\d+)\}|\((\d+)/(\d+)\))$")
_ARITH_RE = re.compile(r"^[\d.+\-*/()]+$")


def _eval_arith(node: ast.AST, source: str) -> Fraction:
    """Exact value of a + - * / expression tree; literals are read from the source text, since
    Python floats would round `0.1234567890123456789`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Fraction(source[node.col_offset : node.end_col_offset])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval_arith(node.operand, source)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        left, right = _eval_arith(node.left, source), _eval_arith(node.right, source)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left / right
    raise ValueError("not plain arithmetic")


def _mixed(m: re.Match[str]) -> Fraction:
    whole = int(m.group(2))
    num, den = (m.group(3), m.group(4)) if m.group(3) else (m.group(5), m.group(6))
    value = whole + Fraction(int(num), int(den))
    return -value if m.group(1) else value


@lru_cache(maxsize=4096)
def numeric_value(norm: str) -> Number | None:
    """Exact value of a normalised answer made of numbers, fractions and + - * / only."""
    percent = norm.endswith("%")
    text = norm[:-1] if percent else norm
    if not text or len(text) > 200:
        return None
    mixed = _MIXED_RE.match(text)  # `1\frac{9}{10}` (MATH) and `3(7/11)` (APE) are mixed numbers
    if mixed:
        return Number(_mixed(mixed), percent, False)
    text = text.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    prev = None
    while prev != text:
        prev, text = text, _FRAC_RE.sub(lambda m: f"(({m[1] or m[3]})/({m[2] or m[4]}))", text)
    if not _ARITH_RE.match(text) or "**" in text or "//" in text:
        return None
    try:
        text = re.sub(r"(?<![\d.])0+(?=\d)", "", text)  # `007`: Python rejects leading zeros
        value = _eval_arith(ast.parse(text, mode="eval").body, text)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None
    return Number(value, percent, "." in text)


def numeric_verdict(pred: Number, ref: Number) -> bool | None:
    """Equal, not equal, or None when only math-verify's rounding rule can tell."""
    if pred.scaled == ref.scaled:
        return True
    if pred.percent != ref.percent:  # `20%` against 20: the percent sign alone was dropped
        if pred.value == ref.value:
            return True
    close = abs(pred.scaled - ref.scaled) <= Fraction(1, 10**6)
    if close and (pred.decimal or ref.decimal):
        return None  # 0.333333 against 1/3: math-verify's rule (both rounded to 6 places) decides
    return False
