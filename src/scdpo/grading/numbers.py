"""Exact values of normalised answers made of numbers: integers, decimals, fractions, mixed
numbers, percentages and `+ - * /` arithmetic, compared as fractions without sympy."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache


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


def _terminates(value: Fraction) -> bool:
    """Whether a value has a finite decimal expansion (denominator 2^a 5^b)."""
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    return den == 1


# A decimal stands for a value it cannot write exactly (1/3, 2/7) when it agrees with it to six
# significant digits, truncated or rounded: 0.333333 and 0.666667 are 1/3 and 2/3 (math-verify
# rounds to 6 decimal places instead, which makes 0.0000012 equal to 0.0000013).
_SIGNIFICANT = Fraction(1, 10**6)


def numeric_verdict(pred: Number, ref: Number) -> bool:
    """Equal or not: exact, except a decimal against a non-terminating value (see above)."""
    if pred.scaled == ref.scaled:
        return True
    if pred.percent != ref.percent and pred.value == ref.value:
        return True  # `20%` against 20: the percent sign alone was dropped
    for decimal, exact in ((pred, ref), (ref, pred)):
        if decimal.decimal and not exact.decimal and not _terminates(exact.scaled):
            if abs(decimal.scaled - exact.scaled) <= _SIGNIFICANT * abs(exact.scaled):
                return True
    return False
