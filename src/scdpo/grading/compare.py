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


_SIDE_RE = re.compile(r"=|\\approx(?![a-zA-Z])")
_RELATION_OPS = ("<", ">", "\\le", "\\ge", "\\ne")


def _top_level_constant(text: str) -> bool:
    """Whether `text` has a digit outside brackets that is no exponent or index (`x^2`, `a_1`)."""
    depth, script = 0, False
    for ch in text:
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth == 0 and ch.isdigit() and not script:
            return True
        script = (ch in "^_") or (script and ch.isdigit())
    return False


def is_name(lhs: str) -> bool:
    """What an answer may name on the left of `=`: `f(x)`, `f^{-1}(x)`, `\\angle B`, `AB`,
    `a_n`, `a+b`, `x^2+y^2`, `\\frac{a}{b}`; not an equation (`10x-4y-5z-20`, `2x`, `x+1`:
    a constant outside brackets)."""
    free = re.sub(r"\\[a-zA-Z]+", "", lhs)  # command names (\frac, \pi) are not variables
    if not lhs or not re.search(r"[a-zA-Z]", free) or not (lhs[0].isalpha() or lhs[0] == "\\"):
        return False
    return not _top_level_constant(lhs)


def value_sides(pred: str, ref: str) -> list[str] | None:
    """The parts of a predicted `lhs = rhs` (or `\\approx`) to compare with a gold that has no
    `=`; any of them equal means equal.

    `2+3=5`, chains `A=\\pi r^2=4\\pi` and names (`f(x) = 2x+1`, `\\angle B = 75`) are read as
    their last side; before an `\\approx` the exact value counts too (`2\\sqrt3 \\approx 3.46` is
    both). One equation in variables such as `10x-4y-5z-20=0` is not a value: math-verify would
    compare its right side 0 with the gold, so it is ruled out here (None).
    """
    if "=" in ref or any(op in pred for op in _RELATION_OPS) or not _SIDE_RE.search(pred):
        return [pred]
    sides = _SIDE_RE.split(pred)
    first = re.sub(r"\\[a-zA-Z]+", "", sides[0])
    if len(sides) == 2 and re.search(r"[a-zA-Z]", first) and not is_name(sides[0]):
        return None
    values = [sides[-1]]
    for side, sep in zip(sides[1:-1], _SIDE_RE.findall(pred)[1:], strict=True):
        if sep != "=" and not is_name(side):  # the exact side of an approximation
            values.append(side)
    if "=" not in _SIDE_RE.findall(pred)[0] and not is_name(sides[0]):
        values.append(sides[0])
    return [v for v in values if v]


def _not_a_number(answer: str) -> bool:
    """True for answers that can never equal a plain number: lists, tuples, intervals, matrices,
    and expressions in variables (`e` and `i` excepted: they may be the constants)."""
    if "," in answer or "\\begin{" in answer:
        return True
    letters = set(re.findall(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", answer)))
    return bool(letters - {"e", "i"})


# Words compared as text, whatever their case (`\text{Even}` is even); shorter letter strings
# may be products (`ab`), which math-verify compares (it also takes `no` for `on`: n*o = o*n)
_ANSWER_WORDS = {"yes", "no", "odd", "even", "none", "all", "true", "false", "both", "neither"}
_WORD_RE = re.compile(r"[A-Za-z]{2,}")


def _words(pred: str, ref: str) -> bool:
    if not (_WORD_RE.fullmatch(pred) and _WORD_RE.fullmatch(ref)):
        return False
    lower = {pred.lower(), ref.lower()}
    return bool(lower & _ANSWER_WORDS) or min(len(pred), len(ref)) >= 4


def fast_verdict(pred: str, ref: str) -> bool | None:
    """Verdict on two normalised single values without sympy, or None when it needs sympy."""
    if pred == ref:
        return True
    if not pred or not ref:
        return False
    if _words(pred, ref):
        return pred.lower() == ref.lower()
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


def _equal_any(preds: list[str], ref: str, symbolic: Symbolic) -> bool:
    """Any of several readings of one answer equal: the fast verdicts first."""
    verdicts = [fast_verdict(p, ref) for p in preds]
    if any(verdicts):
        return True
    return any(v is None and symbolic(ref, p) for p, v in zip(preds, verdicts, strict=True))


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
    if ref.kind == "one" and pred.kind in _UNORDERED and len(pred.items) > 1:
        # one answer written twice (`\\boxed{x+11}` or `\\boxed{11+x}`) is that answer;
        # `x = 5 or x = 6` is not 5, nor `\\pm 3` 3
        return all(_equal(item, ref.items[0], symbolic) for item in pred.items)
    if ref.kind == "one" or pred.kind == "one":
        if len(pred.items) != 1 or len(ref.items) != 1:
            return False  # 5 is not `5, 6`
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


_NUMBER_RE = re.compile(r"\\frac\{[^{}]*\}\{[^{}]*\}|\d+(?:\.\d+)?(?:/\d+)?%?")
_HANZI_RE = re.compile(r"[\u4e00-\u9fff]")
_JOINED_RE = re.compile(r"^[\s,，、;；]*(?:或者?|和|与|及|或是)?[\s,，、;；]*$")


def _answer_sentence(answer: str) -> bool:
    """A Chinese answer sentence whose values only words separate (`答：小明有12个，小红有15
    个。`), not a list (`12和15`, `12、15`): its answer is its last value."""
    if not _HANZI_RE.search(answer) or "、" in answer:
        return False
    gaps = _NUMBER_RE.split(answer)[1:-1]
    return bool(gaps) and all(_HANZI_RE.search(g) and not _JOINED_RE.match(g) for g in gaps)


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
    if ref_shape.kind == "one" and pred_shape.kind == "list" and _answer_sentence(answer):
        pred, pred_shape = pred_shape.items[-1], Shape("one", pred_shape.items[-1:])
    if pred_shape.kind == "one" and ref_shape.kind == "one":
        sides = value_sides(pred, ref)
        return sides is not None and _equal_any(sides, ref, symbolic)
    return compare_shapes(pred_shape, ref_shape, symbolic)
