"""Notations that math-verify does not parse, rewritten to ones it does (and the fast path reads).

Repeating decimals (`0.\\overline{36}`, `0.1\\dot{6}`, `0.(3)`, `0.333\\ldots`) become exact
fractions; scientific notation (`2.5e-3`, `2.5\\times 10^{-3}`) and scale words (`1.5 million`)
become decimals; `\\begin{array}` in parentheses and `bmatrix` become `pmatrix`; Python's `pi` and
`**` (code output) become `\\pi` and `^`. Every pattern is linear in the text's length.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_MAX_EXPONENT = 30  # `1e400` is not a value anyone means; it is left as it is


def _fraction_text(value: Fraction) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value.denominator == 1:
        return f"{sign}{value.numerator}"
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _repeating(sign: str, whole: str, fixed: str, period: str) -> str:
    """`whole.fixed(period)(period)...` as an exact fraction."""
    value = Fraction(int(whole or "0"))
    if fixed:
        value += Fraction(int(fixed), 10 ** len(fixed))
    value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
    return _fraction_text(-value if sign else value)


# `0.\overline{36}`, `0.1\overline{6}`, `0.\dot{3}`, `0.\dot{1}4\dot{2}` (from one dot to the
# other), `0.(3)`: the notations for a repeating block.
_OVERLINE_RE = re.compile(r"(?<![\d.])(-?)(\d*)\.(\d*)\\(?:overline|bar)\{(\d{1,20})\}(?![\d\\])")
_DOT_RE = re.compile(
    r"(?<![\d.])(-?)(\d*)\.(\d*)\\dot\{?(\d)\}?(?:(\d{0,18})\\dot\{?(\d)\}?)?(?![\d\\])"
)
_PAREN_RE = re.compile(r"(?<![\d.])(-?)(\d+)\.(\d*)\((\d{1,20})\)")
# `0.333...`, `0.1666\ldots`: the digits before the dots show the period (two copies at least)
_ELLIPSIS_RE = re.compile(r"(?<![\d.])(-?)(\d+)\.(\d{2,40})\s*(?:\.{3}|\\[lc]?dots|…)")


def _dotted(m: re.Match[str]) -> str:
    sign, whole, fixed, first, middle, last = m.groups()
    period = first + (middle or "") + (last or "") if last else first
    return _repeating(sign, whole, fixed, period)


def _ellipsis(m: re.Match[str]) -> str:
    sign, whole, digits = m.groups()
    for size in range(1, len(digits) // 2 + 1):
        block = digits[-size:]
        if digits.endswith(block * 2):
            start = len(digits)
            while start >= size and digits[start - size : start] == block:
                start -= size
            return _repeating(sign, whole, digits[:start], block)
    return m.group(0)


def repeating_decimals(text: str) -> str:
    if "." not in text:
        return text
    text = _OVERLINE_RE.sub(lambda m: _repeating(*m.groups()), text)
    text = _DOT_RE.sub(_dotted, text)
    text = _PAREN_RE.sub(lambda m: _repeating(*m.groups()), text)
    return _ELLIPSIS_RE.sub(_ellipsis, text)


_NUMBER = r"(\d+(?:\.\d+)?)"
_E_NOTATION_RE = re.compile(rf"(?<![\w.\\]){_NUMBER}[eE]([-+]?\d{{1,3}})(?![\w.])")
_TIMES_TEN_RE = re.compile(
    rf"(?<![\w.\\]){_NUMBER}\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*(?:\{{\s*([-+]?\d{{1,3}})\s*\}}|(\d))"
)
# `2 1/2` (GSM8K-style mixed number): with the space gone it would read 21/2
_SPACED_MIXED_RE = re.compile(r"(?<![\d.,/])(\d+)\s+(\d+)/(\d+)(?![\d.,/])")


def spaced_mixed(text: str) -> str:
    """`2 1/2` as `(2+1/2)`; run while the spaces are still there."""
    return _SPACED_MIXED_RE.sub(r"(\1+\2/\3)", text) if "/" in text else text


_E_HINT_RE = re.compile(r"\d[eE][-+]?\d")
_TEN_HINT_RE = re.compile(r"10\s*\^")
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9}
_SCALES.update({"trillion": 10**12, "dozen": 12})
_SCALE_RE = re.compile(rf"(?<![\w.]){_NUMBER}\s*({'|'.join(_SCALES)})(?![a-zA-Z])", re.I)


def _decimal(mantissa: str, factor: Decimal) -> str:
    try:
        return format((Decimal(mantissa) * factor).normalize(), "f")
    except InvalidOperation:
        return mantissa


def _powered(mantissa: str, exponent: str, whole: str) -> str:
    if abs(int(exponent)) > _MAX_EXPONENT:
        return whole
    return _decimal(mantissa, Decimal(10) ** int(exponent))


def scientific(text: str) -> str:
    """`2.5e-3`, `2.5 \\times 10^{-3}` and `1.5 million` as decimals."""
    if ("e" in text or "E" in text) and _E_HINT_RE.search(text):
        text = _E_NOTATION_RE.sub(lambda m: _powered(m[1], m[2], m[0]), text)
    if "^" in text and _TEN_HINT_RE.search(text):
        text = _TIMES_TEN_RE.sub(lambda m: _powered(m[1], m[2] or m[3], m[0]), text)
    lower = text.lower()
    if any(word in lower for word in _SCALES):
        text = _SCALE_RE.sub(lambda m: _decimal(m[1], Decimal(_SCALES[m[2].lower()])), text)
    return text


_MATRIX_OPEN_RE = re.compile(r"[(\[]?\s*\\begin\{(?:array\}\{[^{}]*|matrix|bmatrix|pmatrix)\}")
_MATRIX_CLOSE_RE = re.compile(r"\\end\{(?:array|matrix|bmatrix|pmatrix)\}\s*[)\]]?")
_PMATRIX = ("\\begin{pmatrix}", "\\end{pmatrix}")


def _balanced(text: str) -> bool:
    return text.count("(") == text.count(")") and text.count("[") == text.count("]")


def matrices(text: str) -> str:
    """`\\left(\\begin{array}{cc}...\\end{array}\\right)`, `[\\begin{matrix}...]`,
    `(\\begin{pmatrix}...)` and `bmatrix` as one `pmatrix` (the notation differs, not the value;
    `vmatrix`, a determinant, stays). Run after `\\left` / `\\right` are gone."""
    if "\\begin{" not in text:
        return text
    opened = _MATRIX_OPEN_RE.sub(lambda _: _PMATRIX[0], text)
    matrix = _MATRIX_CLOSE_RE.sub(lambda _: _PMATRIX[1], opened)
    if _balanced(matrix) or not _balanced(text):
        return matrix
    # a bracket that belonged to something else (`(\begin{pmatrix}..\end{pmatrix}, 3)`): kept
    keep = re.sub(r"\\begin\{(?:array\}\{[^{}]*|matrix|bmatrix)\}", lambda _: _PMATRIX[0], text)
    return re.sub(r"\\end\{(?:array|matrix|bmatrix)\}", lambda _: _PMATRIX[1], keep)


_PYTHON_PI_RE = re.compile(r"(?<![\\a-zA-Z])pi(?![a-zA-Z])")
_POWER_RE = re.compile(r"\*\*\s*(\w+|\([^()]*\))")


def python_notation(text: str) -> str:
    """Code output (`pi/2`, `2**10`) in LaTeX: `\\pi`, `^`."""
    if "pi" in text:
        text = _PYTHON_PI_RE.sub(r"\\pi ", text)
    return _POWER_RE.sub(r"^{\1}", text) if "**" in text else text
