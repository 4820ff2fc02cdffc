"""Comparing two normalised answers: single values, and answers with several values.

`decide(answer, reference, symbolic)` is the whole verdict after extraction. It runs in the
caller with a `symbolic` that raises `NeedsSymbolic` (the fast path), and again, whole, in a
math-verify worker under the time limit when the fast path cannot decide.

Several values (`x=2, x=-3`, `5 \\text{ or } 6`, `\\{1,2\\}`, `2\\pm\\sqrt3`, `x=3, y=4`) are
compared as the reference demands: a bare list, a set or a `\\pm` as an unordered collection,
a parenthesised tuple in order. A form not modelled here (relations, intervals, `\\mathbb{R}`,
set operations) goes to math-verify whole, never to a blanket "not equal".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from scdpo.grading.normalize import normalize, numeric_value, numeric_verdict

Symbolic = Callable[[str, str], bool]  # (gold, pred) -> equal


class NeedsSymbolic(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the fast path's `symbolic` when only math-verify can decide."""


def fast_only(gold: str, pred: str) -> bool:
    """The `symbolic` of the in-process fast path."""
    raise NeedsSymbolic


# A generated answer this much longer than its reference is a loop, not a value.
_MAX_RATIO, _MAX_EXTRA = 20, 1000
_MAX_ITEMS = 64  # more values than this: math-verify compares the whole strings

# Relations, intervals, infinite sets and set operations: compared by math-verify whole.
_OPAQUE_RE = re.compile(
    r"[<>]|\\(?:le|ge|leq|geq|neq|ne|in|notin|mathbb|emptyset|varnothing|cup|cap|setminus|"
    r"infty|begin|subset|subseteq|forall|exists|to)(?![a-zA-Z])"
)
_PM_RE = re.compile(r"\\(pm|mp)(?![a-zA-Z])")
_VAR = r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?"
_ASSIGN_RE = re.compile(rf"^({_VAR})=([^=]+)$")


@dataclass(frozen=True)
class Shape:
    """An answer's values. kind: 'one', 'list' (bare, commas), 'set' (`\\{\\}`, `\\pm`, one
    variable assigned several times), 'tuple' (parentheses, distinct variables) or 'opaque'."""

    kind: str
    items: tuple[str, ...]
    names: tuple[str, ...] = ()  # a tuple's variables, when written as assignments


def _split_top(text: str) -> list[str]:
    """Split at commas outside (), [], {} and `\\{ \\}` (linear)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _enclosed(text: str, left: str, right: str) -> str | None:
    """The inside of `left...right` when they enclose the whole text as one group."""
    if not (text.startswith(left) and text.endswith(right)) or len(text) < len(left + right):
        return None
    inner = text[len(left) : len(text) - len(right)]
    depth = 0
    for ch in inner:
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth < 0:
            return None  # `(1)+(2)`: the outer parentheses are two groups
    return inner if depth == 0 else None


def _expand_pm(item: str) -> list[str] | None:
    """`a\\pm b` as [a+b, a-b]; None for more than one `\\pm` (not modelled)."""
    found = _PM_RE.findall(item)
    if not found:
        return [item]
    if len(found) > 1:
        return None
    first, second = ("+", "-") if found[0] == "pm" else ("-", "+")
    return [_PM_RE.sub(first, item).lstrip("+"), _PM_RE.sub(second, item).lstrip("+")]


def shape(norm: str) -> Shape:
    """The values of a normalised answer (see `Shape`)."""
    if _OPAQUE_RE.search(norm) or "matrix}" in norm:
        return Shape("opaque", (norm,))
    inner = _enclosed(norm, "\\{", "\\}")
    if inner is not None:
        return _collection("set", _split_top(inner), norm)
    inner = _enclosed(norm, "(", ")")
    parts = _split_top(inner) if inner is not None else []
    if len(parts) > 1:
        return _collection("tuple", parts, norm)
    parts = _split_top(norm)
    if len(parts) == 1:
        match = _ASSIGN_RE.match(norm)
        values = _expand_pm(match.group(2) if match else norm)
        if values is None:
            return Shape("opaque", (norm,))
        return Shape("one", (norm,)) if len(values) == 1 else Shape("set", tuple(values))
    return _assignments(parts, norm)


def _collection(kind: str, parts: list[str], norm: str) -> Shape:
    if len(parts) > _MAX_ITEMS or any(not p or "=" in p or _PM_RE.search(p) for p in parts):
        return Shape("opaque", (norm,))
    return Shape(kind, tuple(parts))


def _assignments(parts: list[str], norm: str) -> Shape:
    """A bare list; `x=a, x=b` is a set, `x=a, y=b` a tuple in the written order."""
    names, values = [], []
    for part in parts:
        match = _ASSIGN_RE.match(part)
        if match:
            names.append(match.group(1))
        elif "=" in part:
            return Shape("opaque", (norm,))
        expanded = _expand_pm(match.group(2) if match else part)
        if expanded is None or not all(expanded):
            return Shape("opaque", (norm,))
        values.extend(expanded)
    if len(values) > _MAX_ITEMS:
        return Shape("opaque", (norm,))
    distinct = len(names) == len(parts) == len(set(names)) == len(values)
    if distinct:
        return Shape("tuple", tuple(values), tuple(names))
    return Shape("set" if names or len(values) > len(parts) else "list", tuple(values))


# --- single values -------------------------------------------------------------------------------


def value_side(pred: str, ref: str) -> str | None:
    """The part of a predicted `lhs = rhs` to compare with a gold that has no `=`.

    `2+3=5` and chains `A=\\pi r^2=4\\pi` are read as their last side (single-variable `x = 5` was
    already reduced by normalisation), but one equation in variables such as `10x-4y-5z-20=0` is
    not a value: math-verify would compare its right side 0 with the gold, so it is ruled out here
    (None).
    """
    if "=" not in pred or "=" in ref or any(op in pred for op in ("<", ">", "\\le", "\\ge")):
        return pred
    lhs, rhs = pred.rsplit("=", 1)
    free = re.sub(r"\\[a-zA-Z]+", "", lhs)  # command names (\frac, \pi) are not variables
    return None if "=" not in lhs and re.search(r"[a-zA-Z]", free) else rhs


def _not_a_number(answer: str) -> bool:
    """True for answers that can never equal a plain number: lists, tuples, intervals, matrices,
    and expressions in variables (`e` and `i` excepted: they may be the constants)."""
    if "," in answer or "\\begin{" in answer:
        return True
    letters = set(re.findall(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", answer)))
    return bool(letters - {"e", "i"})


def fast_verdict(pred: str, ref: str) -> bool | None:
    """Verdict on two normalised single values without sympy, or None when it needs sympy."""
    if pred == ref:
        return True
    if not pred or not ref:
        return False
    pred_value, ref_value = numeric_value(pred), numeric_value(ref)
    if pred_value is not None and ref_value is not None:
        return numeric_verdict(pred_value, ref_value)
    if pred_value is not None or ref_value is not None:
        other = ref if pred_value is not None else pred
        return False if not _OPAQUE_RE.search(other) and _not_a_number(other) else None
    if ("matrix}" in pred) != ("matrix}" in ref):
        return False
    if len(ref) == 1 and ref.isalpha() and len(pred) == 1:
        return False  # two different choice letters
    return None


def _equal(pred: str, ref: str, symbolic: Symbolic) -> bool:
    verdict = fast_verdict(pred, ref)
    return symbolic(ref, pred) if verdict is None else verdict


# --- several values -------------------------------------------------------------------------------


def _in_order(pred: tuple[str, ...], ref: tuple[str, ...], symbolic: Symbolic) -> bool:
    return len(pred) == len(ref) and all(
        _equal(p, r, symbolic) for p, r in zip(pred, ref, strict=True)
    )


def _as_sets(pred: tuple[str, ...], ref: tuple[str, ...], symbolic: Symbolic) -> bool:
    """Equal as collections: each reference value matched to its own predicted value.

    Exact matches first, so the fast path decides most lists without asking math-verify.
    """
    if len(set(pred)) != len(set(ref)):
        return False
    left = list(dict.fromkeys(pred))
    todo = []
    for r in dict.fromkeys(ref):
        if r in left:
            left.remove(r)
        else:
            todo.append(r)
    for r in todo:
        decided = [(p, fast_verdict(p, r)) for p in left]
        match = next((p for p, v in decided if v), None)
        if match is None:
            match = next((p for p, v in decided if v is None and symbolic(r, p)), None)
        if match is None:
            return False
        left.remove(match)
    return True


_UNORDERED = {"list", "set"}


def compare_shapes(pred: Shape, ref: Shape, symbolic: Symbolic) -> bool:
    """Compare two modelled shapes as the reference demands (see the module docstring)."""
    if ref.kind == "one" or pred.kind == "one":
        if len(pred.items) != 1 or len(ref.items) != 1:
            return False  # `x = 5 or x = 6` is not 5; 5 is not `5, 6`
        return _equal(pred.items[0], ref.items[0], symbolic)
    if ref.kind == "tuple":
        items = pred.items
        if pred.names and sorted(pred.names) == sorted(ref.names):  # `y=4, x=3` is `x=3, y=4`
            by_name = dict(zip(pred.names, pred.items, strict=True))
            items = tuple(by_name[name] for name in ref.names)
        return pred.kind in ("tuple", "list") and _in_order(items, ref.items, symbolic)
    if pred.kind == "tuple" and ref.kind == "set":
        return False  # `x=3, y=4` or `(3, 4)` is a point, not the solutions of one variable
    return _as_sets(pred.items, ref.items, symbolic)


def decide(answer: str, reference: str, symbolic: Symbolic) -> bool:
    """The verdict on an extracted answer against a reference answer (empty: never equal)."""
    ref, pred = normalize(reference), normalize(answer)
    if not ref or not pred:
        return False
    if pred == ref:
        return True
    if len(pred) > _MAX_RATIO * len(ref) + _MAX_EXTRA:
        return False
    ref_shape, pred_shape = shape(ref), shape(pred)
    if "opaque" in (ref_shape.kind, pred_shape.kind):
        return _equal(pred, ref, symbolic)  # math-verify on the whole answers
    if pred_shape.kind == "one" and ref_shape.kind == "one":
        pred = value_side(pred, ref)
        return pred is not None and _equal(pred, ref, symbolic)
    return compare_shapes(pred_shape, ref_shape, symbolic)
