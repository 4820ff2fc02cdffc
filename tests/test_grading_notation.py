"""Issue 28, notations: Chinese fractions, mixed numbers and numerals in words, forms math-verify
does not parse (repeating decimals, scientific notation, Python output, `\\approx`, arrays),
relations against intervals, a scalar times a vector, text differing in case, tiny decimals,
and answers inside code-integrated solutions. Each with the near misses it must reject.
"""

from __future__ import annotations

import pytest

from scdpo.grading import grade, normalize, predicted_answer
from scdpo.grading.chinese import chinese_numbers
from scdpo.grading.compare import NeedsSymbolic, decide, fast_only


def _fast(pred: str, ref: str) -> bool | None:
    try:
        return decide(pred, ref, fast_only)
    except NeedsSymbolic:
        return None


# --- Chinese fractions, mixed numbers, numerals inside words -----------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7分之3", r"\frac{3}{7}"),
        ("100分之35", r"\frac{35}{100}"),
        ("2又\\frac{1}{4}", r"(2+\frac{1}{4})"),
        ("三又四分之一", r"(3+\frac{1}{4})"),
        ("5又2/3", "(5+2/3)"),
        ("负1又2分之1", r"-(1+\frac{1}{2})"),
        ("第一天", "第1天"),  # a label keeps its word; the numeral is read as a label
        ("三角形", "三角形"),
        ("十分之一", r"\frac{1}{10}"),  # 十分 is 'very' only when no 之 follows
        ("又买了3个", "又买了3个"),  # 又 as 'again' stays
    ],
)
def test_chinese_forms_rewritten(text: str, expected: str) -> None:
    assert chinese_numbers(text) == expected


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("7分之3", r"\frac{3}{7}", True),
        ("7分之3", r"\frac{7}{3}", False),  # the denominator comes first in 分之
        ("答：这个数是100分之35。", "0.35", True),
        ("2又\\frac{1}{4}", "2.25", True),
        ("2又\\frac{1}{4}", r"\frac{1}{4}", False),  # the whole part counts
        ("2又\\frac{1}{4}", "2", False),
        ("三又四分之一", r"\frac{13}{4}", True),
        ("三又四分之一", r"\frac{1}{4}", False),  # issue 28's false accept
        ("一又三分之一", r"\frac{1}{3}", False),
        ("答：需要1又3分之2小时。", r"\frac{5}{3}", True),
        ("答：需要1又3分之2小时。", r"\frac{2}{3}", False),
        ("负1又2分之1", "-1.5", True),
        ("负1又2分之1", "1.5", False),
    ],
)
def test_chinese_fractions_and_mixed_numbers(pred: str, ref: str, equal: bool) -> None:
    assert grade(pred, ref) is equal


# --- notations math-verify does not parse ------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        (r"0.\overline{36}", r"\frac{4}{11}"),
        (r"0.1\overline{6}", r"\frac{1}{6}"),
        (r"1.\overline{142857}", r"\frac{8}{7}"),
        (r"-0.\overline{3}", r"-\frac13"),
        (r"0.\dot{3}", r"\frac{1}{3}"),
        (r"0.\dot{1}4\dot{2}", r"\frac{142}{999}"),
        ("0.(6)", r"\frac{2}{3}"),
        ("0.8333...", r"\frac{5}{6}"),
        (r"0.121212\ldots", r"\frac{4}{33}"),
        ("2.5e-3", "0.0025"),
        ("1.2E+4", "12000"),
        (r"3.2 \times 10^{-4}", "0.00032"),
        (r"6.02 \cdot 10^{23}", "602000000000000000000000"),
        ("pi/2", r"\frac{\pi}{2}"),
        ("3*pi", r"3\pi"),
        ("2**10", "1024"),
        ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}"),
        (r"\approx 2.72", "2.72"),
        ("≈ 2.72", "2.72"),
        (
            r"\left(\begin{array}{cc}1 & 2\\ 3 & 4\end{array}\right)",
            r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
        ),
        (r"\left[\begin{array}{c}5\\-1\end{array}\right]", r"\begin{pmatrix}5\\-1\end{pmatrix}"),
        (r"\begin{bmatrix}0 & 1\\ 1 & 0\end{bmatrix}", r"\begin{pmatrix}0&1\\1&0\end{pmatrix}"),
        (r"\left(\begin{matrix}2\\7\end{matrix}\right)", r"\begin{pmatrix}2\\7\end{pmatrix}"),
        (r"3\begin{pmatrix}1\\-2\end{pmatrix}", r"\begin{pmatrix}3\\-6\end{pmatrix}"),
        (r"\frac{1}{2}\begin{pmatrix}4\\6\end{pmatrix}", r"\begin{pmatrix}2\\3\end{pmatrix}"),
        (r"x \geq 2", r"[2, \infty)"),
        (r"x > -1", r"(-1, \infty)"),
        (r"-3 \le x \le 5", "[-3, 5]"),
        (r"\text{Even}", r"\text{even}"),
        (r"\text{Monday}", "monday"),
        ("YES", r"\text{yes}"),
        (r"\text{No}", "no"),
    ],
)
def test_notations_equal(pred: str, ref: str) -> None:
    assert grade(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        (r"0.\overline{36}", r"\frac{36}{100}"),  # repeating is not terminating
        (r"0.\overline{36}", r"\frac{9}{25}"),
        (r"0.3\overline{6}", r"\frac{2}{3}"),
        (r"0.\dot{3}", "0.3"),
        ("0.8333...", r"\frac{4}{5}"),
        ("2.5e-3", "0.025"),
        ("2.5e-3", "2.5"),
        (r"3.2 \times 10^{-4}", "0.0032"),
        ("pi/2", r"\pi"),
        ("pi/2", r"\frac{1}{2}"),  # pi is no variable p times i
        ("2**10", "20"),
        (r"\approx 2.72", "2.7"),
        (
            r"\left(\begin{array}{cc}1 & 2\\ 3 & 4\end{array}\right)",
            r"\begin{pmatrix}1&2\\4&3\end{pmatrix}",
        ),
        (r"3\begin{pmatrix}1\\-2\end{pmatrix}", r"\begin{pmatrix}3\\6\end{pmatrix}"),
        (r"x \geq 2", r"(2, \infty)"),
        (r"x > 2", r"[2, \infty)"),
        (r"x \geq 3", r"[2, \infty)"),
        (r"\text{Even}", r"\text{odd}"),
        (r"\text{no}", r"\text{on}"),  # math-verify alone takes n*o for o*n
        (r"\text{Tuesday}", "monday"),
    ],
)
def test_notations_near_misses(pred: str, ref: str) -> None:
    assert not grade(pred, ref)


def test_notations_decided_without_math_verify() -> None:
    assert _fast(r"0.\overline{36}", r"\frac{4}{11}") is True
    assert _fast("2.5e-3", "0.0025") is True
    assert _fast(r"\text{Even}", "even") is True
    assert _fast("no", "on") is False


# --- tiny decimals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("0.0000012", "0.0000013", False),  # issue 28's false accept: no rounding of exact decimals
        ("0.00000012", "0.00000011", False),
        ("1.0000001", "1.0000002", False),
        ("0.0000012", r"\frac{12}{10000000}", True),
        ("0.333333", r"\frac13", True),  # a decimal for a value it cannot write: 6 digits
        ("0.666667", r"\frac23", True),
        ("0.142857", r"\frac17", True),
        ("33333.33", r"\frac{100000}{3}", True),
        ("0.33", r"\frac13", False),
        ("0.333", r"\frac13", False),
        ("0.000001", r"\frac{1}{700000}", False),  # close in absolute terms, 30% off
        ("0.00000143", r"\frac{1}{700000}", False),
        ("0.00000142857", r"\frac{1}{700000}", True),
    ],
)
def test_tiny_decimals(pred: str, ref: str, equal: bool) -> None:
    assert grade(pred, ref) is equal
    assert _fast(pred, ref) is equal  # decided exactly, without math-verify's rounding


# --- code-integrated solutions -------------------------------------------------------------------


def _code(output: str, last_text: str) -> str:
    return (
        "<|text|>Let us compute it.<|endofblock|><|code|>print(answer)<|endofblock|>"
        f"<|execution|>{output}<|endofblock|><|text|>{last_text}<|endofblock|><|endofmessage|>"
    )


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        (_code("pi/2", "The answer is the output above."), "pi/2"),
        (_code("Area: 12.5", "The result is printed above."), "12.5"),
        (_code("The total is 42", "So the result is shown in the output."), "42"),
        (_code("[2, -3]", "The roots are printed above."), "2, -3"),
        (_code("5", "So the answer is 6."), "6"),  # the text's own statement wins
        (_code("5", r"So the answer is $\boxed{7}$."), "7"),
        (_code("5", "Let me check this again."), None),  # no answer stated, none referred to
        (_code("The answer is 5", "The answer is printed above."), "5"),
    ],
)
def test_code_integrated_answers(solution: str, expected: str | None) -> None:
    assert predicted_answer(solution) == expected


@pytest.mark.parametrize(
    ("solution", "ref", "equal"),
    [
        (_code("pi/2", "The answer is the output above."), r"\frac{\pi}{2}", True),
        (_code("pi/3", "The answer is the output above."), r"\frac{\pi}{2}", False),
        (_code("[2, -3]", "The roots are printed above."), "-3, 2", True),
        (_code("[2, -3]", "The roots are printed above."), "2", False),
        (_code("0.0025", "The result is printed above."), "2.5e-3", True),
        (_code("5", "Let me check this again."), "5", False),
    ],
)
def test_code_integrated_graded(solution: str, ref: str, equal: bool) -> None:
    assert grade(solution, ref) is equal


def test_code_statement_only_in_text_blocks() -> None:
    # `#### 9` in code is no statement of the solution's answer
    solution = (
        "<|text|>x<|endofblock|><|code|>print('#### 9')<|endofblock|><|text|>#### 8<|endofblock|>"
    )
    assert predicted_answer(solution) == "8"


def test_normalised_forms() -> None:
    assert normalize(r"0.\overline{36}") == r"\frac{4}{11}"
    assert normalize("2.5e-3") == "0.0025"
    assert normalize("1.5 million") == "1500000"
    assert normalize(r"\left(\begin{array}{c}1\\2\end{array}\right)") == (
        r"\begin{pmatrix}1\\2\end{pmatrix}"
    )
