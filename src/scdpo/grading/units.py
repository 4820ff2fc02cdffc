"""Units, currencies and counted nouns written around a value: `5 \\text{ cm}`, `60 km/h`,
`12 apples`, `-3 °C`, `¥45`, `12（个）`, `12\\pi \\text{ cm}^2`.

A unit goes only when it follows a value, so that a word that is the answer itself
(`\\text{parabola}`) stays. Single letters stay, except the SI units `m g s h L` (a single letter
after a number is usually a variable: `2 x`); so do function names, connectives and the words
that make a number something else (`squared`, `factorial`). Linear in the text's length.
"""

from __future__ import annotations

import re

_BOLD = {"textbf", "mathbf"}  # vectors and emphasis, never units
_CONNECTIVES = {"or", "and", "或", "和", "或者", "与", "及"}
# Words in \text{} that belong to the answer's logic, not to a unit
_KEPT_RE = re.compile(
    r"\b(?:if|for|when|where|otherwise|is|are|not|no|none|undefined|all|every|any|and|or|else)\b",
    re.IGNORECASE,
)
_DIGIT_RE = re.compile(r"\d")
# Scale words are values (`1.5 \text{ million}`): kept for `notation.scientific`
_SCALE_WORDS = {"hundred", "thousand", "million", "billion", "trillion", "dozen"}
_TEXT_CMD_RE = re.compile(
    r"\\(text|textbf|textit|textrm|mathrm|mathbf|mbox|textnormal)\s*\{([^{}]*)\}(\^\{?\d\}?)?"
)
_MAX_PASSES = 4


_GAP_RE = re.compile(r"(?:\s|\\[,;:! ]|~)+$")  # spaces and spacing commands


def _after_value(text: str, end: int) -> bool:
    """Whether text[:end] ends (spacing aside) in a value: a digit, `}`, `)`, `%` or `\\pi`."""
    before = _GAP_RE.sub("", text[max(0, end - 24) : end])
    return bool(before) and (before[-1].isdigit() or before[-1] in "})%" or before.endswith("\\pi"))


def replace_text(answer: str) -> str:
    """`\\text{}` and friends: connectives become commas, units after a value are dropped."""

    def repl(m: re.Match[str]) -> str:
        command, content, power = m.group(1), m.group(2).strip(), m.group(3) or ""
        lower = content.lower()
        if lower in _CONNECTIVES:
            return ","  # `5 \text{ or } 6` is the list 5, 6, never 5
        if lower in _SCALE_WORDS:
            return " " + content
        unit = command not in _BOLD and not _DIGIT_RE.search(content)
        if unit and _after_value(m.string, m.start()) and not _KEPT_RE.search(content):
            return ""  # a unit after a value: `5 \text{ cm}`, `45 \text{ units}^2`
        return content + power

    for _ in range(_MAX_PASSES):
        answer, count = _TEXT_CMD_RE.subn(repl, answer)
        if not count:
            break
    return answer


# Currency signs anywhere (`\$` and `$` go with the math delimiters)
_CURRENCY_RE = re.compile(
    r"[¥€£₹￥]|\\(?:pounds|euro|yen|textyen|texteuro|textsterling)(?![a-zA-Z])"
)
_PERCENT_WORD_RE = re.compile(r"(?<=\d)\s*(?:percent|per\s+cent|pct)(?![a-zA-Z])", re.I)
# `°C`, `^\circ F`, `℃`: a temperature is its number, as `90^\circ` is 90
DEGREE_RE = re.compile(
    r"(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z]))"
    r"(?:\s*(?:\\(?:text|mathrm)\s*\{\s*[CF]\s*\}|[CF](?![a-zA-Z])))?|[℃℉]"
)
# Chinese measure words in parentheses: `12（个）`
_CJK_PAREN_RE = re.compile(r"\(\s*[\u4e00-\u9fff]{1,4}\s*\)")


_CURRENCY_HINT_RE = re.compile(r"[¥€£₹￥]|\\(?:pounds|euro|yen|text[ye])")


def strip_signs(answer: str) -> str:
    """Currency signs, percent words and Chinese measure words in parentheses."""
    if _CURRENCY_HINT_RE.search(answer):
        answer = _CURRENCY_RE.sub("", answer)
    if "(" in answer:
        answer = _CJK_PAREN_RE.sub("", answer)
    lower = answer.lower()
    if "percent" in lower or "pct" in lower or "per cent" in lower:
        answer = _PERCENT_WORD_RE.sub("%", answer)
    return answer


# Units that may be glued to the number (`12cm`); other words need a space (`2ab` is a product)
_UNITS = (
    "cm|mm|km|kg|mg|ml|mL|ft|yd|oz|lbs?|mph|kmh|kph|hrs?|mins?|secs?|sq|cu|"
    "m|g|s|h|L|inch(?:es)?|feet|foot|yards?|miles?|meters?|metres?|grams?|liters?|litres?"
)
_WORD = r"(?:[A-Za-z]*[AEIOUaeiou][A-Za-z]*)"  # an English word: a vowel, 3 letters at least
_NOT_UNITS = (
    "and|pi|sin|cos|tan|cot|csc|log|exp|lim|max|min|gcd|lcm|det|mod|sqrt|squared|cubed|"
    "factorial|choose|inf|infty|infinity|arcsin|arccos|arctan|sinh|cosh|tanh|"
    "hundred|thousand|million|billion|trillion|dozen|percent|than|the|are|not|per|"
    "halves|thirds|quarters|fourths|fifths|sixths|sevenths|eighths|ninths|tenths|hundredths|"
    "thousandths|millionths"
)
_UNIT = rf"(?:{_UNITS})(?![A-Za-z])"
_SPACED = rf"(?<![\\A-Za-z])(?!(?:{_NOT_UNITS})(?![A-Za-z]))(?=[A-Za-z]{{3}}){_WORD}(?![A-Za-z])"
_POWER = r"(?:\^\s*\{?\s*[23]\s*\}?|[²³])?"
_NEXT = rf"(?:\s*(?:/|\bper\b)\s*(?:{_UNIT}|{_SPACED})|\s+(?:{_UNIT}|{_SPACED})){_POWER}\.?"
_FIRST = rf"(?:\s*(?:/|\bper\b)\s*(?:{_UNIT}|{_SPACED})|\s*{_UNIT}|\s+{_SPACED}){_POWER}\.?"
_PAREN = rf"\s*\(\s*(?:{_UNIT}|{_SPACED})(?:\s+(?:{_UNIT}|{_SPACED}))*+\s*\)"
# Trailing units after a value, at the end of the answer or of one of its list items
_LETTER_RE = re.compile(r"[A-Za-z]")
_TRAILING_UNIT_RE = re.compile(rf"(?<=[\d}}%)])(?:{_FIRST}(?:{_NEXT})*+|{_PAREN})(?=\s*(?:,|$))")


def strip_trailing_units(answer: str) -> str:
    """`60 km/h`, `12cm`, `18 dollars per day`, `12 (apples)`, `12\\pi cm^2` after a value."""
    if not _LETTER_RE.search(answer):
        return answer  # no unit word (a long run of digits is checked in one scan)
    return _TRAILING_UNIT_RE.sub("", answer)
