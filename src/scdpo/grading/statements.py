"""Answer statements without a box: `#### 42`, `The answer is: 42` (MetaMath), `Final Answer:
The final answer is $42$. I hope it is correct.` (Minerva), `答：共有42个。`, `答案是42`; and the
answer of a code-integrated solution whose last text only refers to its last execution output.

The last statement in the text wins; a statement whose words are not an answer ("so the answer
is consistent") is passed over; the words after the answer's sentence are dropped.
"""

from __future__ import annotations

import re

_STRAY_WORD_RE = re.compile(r"^[A-Za-z]{2,}\s*(?=[-+$\d])")  # `#### the300`
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")

# English answer phrases (MetaMath's `The answer is:`, Minerva's `The final answer is`, `Answer:`)
_PHRASE_RE = re.compile(
    r"\b(?:final\s+)?answers?(?:\s+to\s+(?:the|this)\s+(?:question|problem))?\**"
    r"(?:\s+(?:is|are)|\s*:)\s*:?",
    re.IGNORECASE,
)
_CHINESE_RE = re.compile(r"答案?[是为]?[:：]|答案[是为]")
# Words that say something about the answer instead of stating it
_NOT_AN_ANSWER_RE = re.compile(
    r"(?:consistent|correct|incorrect|right|wrong|reasonable|valid|verified|confirmed|indeed|"
    r"not|that|this|as\s+follows|follows|below|above|given|shown|clear|obvious|the\s+same|same|"
    r"unchanged|still|also|now|then|being|likely|probably|found|obtained|calculated|computed|"
    r"determined|to|in|positive|negative|an?\s+(?:integer|number))(?![a-zA-Z])",
    re.IGNORECASE,
)
_REFERS_RE = re.compile(r"\b(?:output|result|printed|above|shown|computed)\b", re.IGNORECASE)
# The end of the answer's sentence, outside math: `. `, `!`, `;`, `。`, or a trailing clause
_SENTENCE_END_RE = re.compile(
    r"[.!?;。；](?=\s|$)|[。；]|,?\s+(?:which|because|since|so\s+that|but|where|hence|thus|"
    r"therefore|as)\b|\s*(?:I\s+hope|Hope)\b"
)


def _cut_sentence(text: str) -> str:
    """`$42$. I hope it is correct.` is `$42$`; a `.` inside `$...$` does not end it."""
    inside, start = False, 0
    for m in re.finditer(r"\$+", text):
        if not inside:
            end = _SENTENCE_END_RE.search(text, start, m.start())
            if end:
                return text[: end.start()]
        inside, start = not inside, m.end()
    end = None if inside else _SENTENCE_END_RE.search(text, start)
    return text[: end.start()] if end else text


def _rest_of_line(text: str, start: int) -> str:
    """From `start` to the end of its line; the next non-empty line when that is empty."""
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end]
    if line.strip() or end < 0:
        return line
    after = text[end + 1 : end + 201].lstrip()  # `The answer is:` then the answer's line
    return after.split("\n", 1)[0] if after else line


def _phrase_answer(text: str, m: re.Match[str]) -> str | None:
    tail = _cut_sentence(_rest_of_line(text, m.end()).strip(" *:"))  # `**Answer:** 42`
    tail = tail.strip(" *").rstrip("。．.").strip(" *$")
    if not tail or _NOT_AN_ANSWER_RE.match(tail):
        return None
    if _REFERS_RE.search(tail) and not re.search(r"\d", tail):
        return None  # `the answer is the output above`: the output is the answer
    return tail


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


_HASHES_RE = re.compile("####")
_MAX_STATEMENTS = 32  # examined from the last; a looping generation repeats them without end


def _statement(text: str, kind: str, m: re.Match[str]) -> str | None:
    if kind == "####":
        return gsm8k_answer(text)
    if kind == "phrase":
        return _phrase_answer(text, m)
    end = text.find("\n", m.start())
    line = (text[m.start() :] if end < 0 else text[m.start() : end]).strip()
    return line if re.search(r"[^\s:：。.答案是为]", line) else None  # the words are kept


def stated_answer(text: str) -> str | None:
    """The answer of the last statement that states one (see the module docstring)."""
    found = [("phrase", m) for m in _PHRASE_RE.finditer(text)]
    found += [("答", m) for m in _CHINESE_RE.finditer(text)]
    found += [("####", m) for m in _HASHES_RE.finditer(text)][-1:]  # gsm8k_answer reads the last
    found.sort(key=lambda item: item[1].start(), reverse=True)
    for kind, m in found[:_MAX_STATEMENTS]:
        answer = _statement(text, kind, m)
        if answer:
            return answer
    return None


def refers_to_output(text: str) -> bool:
    """Whether a last text block only points at the execution output before it."""
    return bool(_REFERS_RE.search(text)) and stated_answer(text) is None


_LABEL_RE = re.compile(r"^(?:[A-Za-z][\w ']*?)(?:\s*[:=]|\s+(?:is|are|equals))\s+(?=\S)")


def output_answer(output: str) -> str | None:
    """The answer an execution output shows: its statement, else its last line without a
    label (`Area: 12.5`, `The total is 42`); a Python list `[2, -3]` is the list 2, -3."""
    stated = stated_answer(output)
    if stated:
        return stated
    lines = [line.strip() for line in output.strip().split("\n") if line.strip()]
    if not lines:
        return None
    line = _LABEL_RE.sub("", lines[-1])
    if line.startswith("[") and line.endswith("]") and "[" not in line[1:]:
        line = line[1:-1]
    return line or None
