"""Chinese numerals, negatives, fractions, percentages and magnitudes written out in words.

`负5` is -5, `18万` is 180000, `百分之二十` is 20%, `三分之一` and `3分之1` are 1/3, `零下3` is -3,
`1又三分之一` is 1 + 1/3. Numerals inside words are not values: ordinals (`第一天`, `第3组`),
weekdays (`星期三`) and words such as `三角形` or `一共`. Plain string rewriting, linear in the
text's length; `normalize` calls it before Chinese words around a value are stripped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6}
_DIGITS.update({"七": 7, "八": 8, "九": 9})
_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_BIG_UNITS = {"万": 10**4, "亿": 10**8}
_NUMERAL = "零〇一二两三四五六七八九十百千万亿点"
_MAX_DIGITS = 40
_ONES = "零〇一二两三四五六七八九"
_CN = f"[{_NUMERAL}]+"
_NUM = rf"(?:\d+(?:\.\d+)?|{_CN})"
_START = rf"(?<![\d.{_NUMERAL}])"  # a match starts at a run's start only: linear time
# A magnitude after digits, unless it is a unit prefix: 千克 (kg), 千米 (km), 百分 (percent).
_MAGNITUDE_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)([百千万亿]+)(?![克米瓦帕卡焦兆分])")
_PERCENT_RE = re.compile(rf"百分之({_NUM})")
_FRACTION_RE = re.compile(rf"{_START}({_NUM})分之({_NUM})")
_NEGATIVE_RE = re.compile(rf"(?:负|零下)({_NUM})")
# `1又\frac{1}{3}`, `一又三分之一` (after 分之 is rewritten), `2又3/4`: a mixed number
_MIXED_RE = re.compile(rf"{_START}({_NUM})又\s*(\\frac\{{\d+\}}\{{\d+\}}|\(?\d+/\d+\)?)")
# Labels, not values: ordinals, weekdays, school grades (their numeral is read, not counted)
_LABEL_RE = re.compile(rf"(第|星期|礼拜|周)(\d+|{_CN})|{_START}(\d+|{_CN})(年级)")
# Words that contain a numeral but no value (`三角形` is a triangle, not 3 jiao)
_WORDS_RE = re.compile(
    "三角形|三角板|四边形|五边形|六边形|八边形|四面体|六面体|正方体|一共|一起|一样|一些|一定|"
    "一般|一直|一边|一面|一下|一点儿|一旦|统一|唯一|万一|十分(?!之)|一部分|一半"
)
_PRIVATE = 0xE000  # protected words stand in the text as private-use characters meanwhile
PROTECTED = "\ue000-\uf8ff"
_MEASURE = "个只人本元角米克天次名辆张块条件棵头岁页颗份组道倍支根朵瓶盒箱袋"
# A word-numeral standing as a value: two characters at least, or one before a measure word
_STANDALONE_RE = re.compile(
    rf"(?<![{_NUMERAL}\d.])([{_NUMERAL}]{{2,}}|[{_ONES}](?=[{_MEASURE}]))(?![{_NUMERAL}])"
)


def _integer(text: str) -> int | None:
    """`二十三` = 23, `一百零五` = 105, `三万五千` = 35000, `二五` = 25 (digit by digit)."""
    if all(ch in _DIGITS for ch in text):
        return int("".join(str(_DIGITS[ch]) for ch in text))
    total = section = digit = 0
    for ch in text:
        if ch in _DIGITS:
            digit = _DIGITS[ch]
        elif ch in _SMALL_UNITS:
            section += (digit or 1) * _SMALL_UNITS[ch]
            digit = 0
        elif ch in _BIG_UNITS:
            total = (total + section + digit) * _BIG_UNITS[ch]
            section = digit = 0
        else:
            return None
    return total + section + digit


def cn_number(text: str) -> str | None:
    """A numeral in digits or Chinese words as a decimal string (`三点五` = 3.5); else None."""
    if len(text) > _MAX_DIGITS:
        return None  # no value is written this long; a loop is left as it is
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return text
    whole, _, frac = text.partition("点")
    value = _integer(whole) if whole else 0
    if value is None or (frac and not all(ch in _DIGITS for ch in frac)):
        return None
    return f"{value}.{''.join(str(_DIGITS[ch]) for ch in frac)}" if frac else str(value)


def _scaled(m: re.Match[str]) -> str:
    if len(m.group(0)) > _MAX_DIGITS:
        return m.group(0)
    factor = 1
    for ch in m.group(2):
        factor *= _SMALL_UNITS.get(ch) or _BIG_UNITS[ch]
    try:
        value = Decimal(m.group(1)) * factor
    except InvalidOperation:
        return m.group(0)
    return format(value.normalize(), "f")


def _sub(pattern: re.Pattern[str], build: Callable[..., str], text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        numbers = [cn_number(g) for g in m.groups()]
        return m.group(0) if None in numbers else build(*numbers)

    return pattern.sub(repl, text)


def _mixed(m: re.Match[str]) -> str:
    whole = cn_number(m.group(1))
    return m.group(0) if whole is None else f"({whole}+{m.group(2)})"


def _label(m: re.Match[str]) -> str:
    word, numeral = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    value = cn_number(numeral) or numeral
    return word + value if m.group(1) else value + word


def _protect(text: str, labels: bool) -> tuple[str, list[str]]:
    """Words with a numeral and no value (and labels, when `labels`), each swapped out for a
    private-use character (`第三天` and `第3天` both stand for `第3天`)."""
    words: list[str] = []

    def swap(word: str) -> str:
        words.append(word)
        return chr(_PRIVATE + min(len(words) - 1, 0x18FF))

    text = _WORDS_RE.sub(lambda m: swap(m.group(0)), text)
    return (_LABEL_RE.sub(lambda m: swap(_label(m)), text) if labels else text), words


def _restore(text: str, words: list[str]) -> str:
    if not words:
        return text
    last = len(words) - 1
    return re.sub(f"[{PROTECTED}]", lambda m: words[min(ord(m.group(0)) - _PRIVATE, last)], text)


def chinese_numbers(
    text: str, then: Callable[[str], str] | None = None, labels: bool = True
) -> str:
    """Rewrite the Chinese ways of writing a value as LaTeX-style ASCII; `then` runs on the
    result while numeral words (and labels, when `labels`) are still swapped out."""
    if not re.search(rf"[{_NUMERAL}负又第周期级]|分之", text):
        return then(text) if then else text
    text, words = _protect(text, labels)
    text = _sub(_PERCENT_RE, lambda n: f"{n}%", text)
    text = _sub(_FRACTION_RE, lambda d, n: f"\\frac{{{n}}}{{{d}}}", text)
    text = _MIXED_RE.sub(_mixed, text)
    text = _sub(_NEGATIVE_RE, lambda n: f"-{n}", text)
    text = re.sub(r"负(?=\s*[\\(])", "-", text)  # 负\frac{1}{2}
    text = _MAGNITUDE_RE.sub(_scaled, text)
    text = _sub(_STANDALONE_RE, lambda n: n, text)
    return _restore(then(text) if then else text, words)
