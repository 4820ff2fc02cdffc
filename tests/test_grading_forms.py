"""The answer forms models really write: several values, `####` lines, Chinese, empty answers.

One test per failure class of issue 15, each with variants of its own; the fast path's verdicts
are checked directly where it matters whether math-verify is asked at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scdpo.grading import grade, grade_many, normalize, predicted_answer, reference_answer
from scdpo.grading.chinese import chinese_numbers
from scdpo.grading.compare import NeedsSymbolic, decide, fast_only

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"
NAMES = ("gsm8k_test", "math500_test", "cmath_test", "mgsm_zh_test", "ape500_test")


def _fast(pred: str, ref: str) -> bool | None:
    """The in-process verdict, None where math-verify would be asked."""
    try:
        return decide(pred, ref, fast_only)
    except NeedsSymbolic:
        return None


# --- several values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("x = 2, x = -3", "-3, 2"),  # roots in any order
        (r"x=1 \text{ or } x=2", "2, 1"),
        ("x = 5 or x = 6", r"5 \text{ or } 6"),
        (r"a \text{ and } b", "a, b"),
        (r"\{1,2\}", "1, 2"),
        (r"\{-1, 4\}", r"\{4,-1\}"),
        ("x = 3, y = 4", "(3, 4)"),  # distinct variables: a tuple, in the written order
        ("(3,4)", "3, 4"),
        (r"2\pm\sqrt3", r"2+\sqrt{3}, 2-\sqrt{3}"),
        (r"x = 2 \pm \sqrt{3}", r"2-\sqrt3, 2+\sqrt3"),
        (r"\pm 3", "3, -3"),
        (r"x=\pm\frac{1}{2}", r"-\frac12,\frac12"),
        (r"\frac{1\pm\sqrt5}{2}", r"\frac{1+\sqrt5}{2},\frac{1-\sqrt5}{2}"),
        (r"x=\frac{-1}{2}, x=3", r"3, -0.5"),
        ("x_1 = 1, x_2 = 2", "(1, 2)"),
        ("(x, y) = (3, 4)", "(3,4)"),
        ("x = 1, 2, or 3", "3, 2, 1"),
        (r"so $\boxed{2}$ or $\boxed{-3}$.", "-3, 2"),  # boxes side by side are one answer
        (r"\boxed{x=2}, \boxed{x=-3}", "-3, 2"),
        ("x = 3, y = 4", "y=4, x=3"),  # both named: matched by name
    ],
)
def test_several_values_equal(pred: str, ref: str) -> None:
    assert grade(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("x = 5 or x = 6", "5"),  # a list never collapses to its last value
        ("x = 5 or x = 6", "6"),
        ("x=-1, x=4", "4"),
        (r"x=1 \text{ or } x=2", "2"),
        (r"2 \text{ and } 3", "3"),
        (r"2\pm\sqrt3", r"2+\sqrt3"),  # \pm is two values
        (r"\pm 3", "3"),
        ("5", "5, 6"),  # one value is not the list
        ("5, 6", "5, 7"),
        ("x=1, x=2", "1, 2, 3"),
        (r"\{1,2\}", r"\{1,3\}"),
        ("x = 3, y = 4", "(4, 3)"),  # order matters for a tuple
        ("x = 3, y = 4", "x=4, y=3"),
        ("x = 2, x = -3", "(2, -3)"),  # two solutions are not a point
        ("1, 2", "12"),
        (r"so $\boxed{2}$ or $\boxed{-3}$.", "-3"),
        ("x = 1, 2, or 3", "3"),
    ],
)
def test_several_values_not_equal(pred: str, ref: str) -> None:
    assert not grade(pred, ref)


def test_several_values_decided_without_math_verify() -> None:
    assert _fast("x = 2, x = -3", "-3, 2") is True
    assert _fast("x = 5 or x = 6", "5") is False
    assert _fast(r"2\pm\sqrt3", r"2-\sqrt{3},2+\sqrt{3}") is True


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        (r"x \in [2, \infty)", r"[2,\infty)"),
        (r"x\le 3", r"(-\infty, 3]"),
        (r"\mathbb{R}", r"(-\infty,\infty)"),
        (r"1\pm\sqrt2 \pm 1", "0"),  # two \pm: not modelled
        (r"(-\infty, 0) \cup (1, \infty)", r"(-\infty,0)\cup(1,\infty)"),
    ],
)
def test_unmodelled_forms_go_to_math_verify(pred: str, ref: str) -> None:
    assert normalize(pred) == normalize(ref) or _fast(pred, ref) is None


def test_unmodelled_forms_accepted_by_math_verify() -> None:
    assert grade(r"x \in [2, \infty)", r"[2,\infty)")
    assert grade(r"(-\infty, 0) \cup (1, \infty)", r"(-\infty,0)\cup(1,\infty)")
    assert not grade(r"x \in [3, \infty)", r"[2,\infty)")


# --- `####` lines and thousands ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("#### 3/4", r"\frac{3}{4}", True),  # the whole line, not its last number
        ("so\n#### 3/4", "0.75", True),
        ("#### 3/4", "4", False),
        (r"#### \frac{14}{3}", "14/3", True),
        ("#### (9/22)", r"\frac{9}{22}", True),
        ("#### 2,125", "2125", True),
        ("#### -7.5.", "-7.5", True),
        ("#### the300", "300", True),
        ("#### 1, 100", "1100", False),
        ("Step 1\n#### $18", "18", True),
    ],
)
def test_gsm8k_lines(pred: str, ref: str, equal: bool) -> None:
    assert grade(pred, ref) is equal


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("1, 100", "1100", False),  # a comma and a space separate values
        ("1,100", "1100", True),
        ("1, 100", "1, 100", True),
        ("1,000, 2", "1000", False),
        ("１２，０００", "12000", True),  # full-width digits and comma
        ("（3，4）", "(3,4)", True),
    ],
)
def test_thousands_separators(pred: str, ref: str, equal: bool) -> None:
    assert grade(pred, ref) is equal


# --- Chinese ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("负5", "-5"),
        ("负0.5", "-0.5"),
        ("零下3度", "-3度"),
        ("18万", "180000"),
        ("3.5万", "35000"),
        ("2亿", "200000000"),
        ("3千", "3000"),
        ("5千克", "5千克"),  # a unit prefix, not a thousand
        ("百分之二十", "20%"),
        ("百分之12.5", "12.5%"),
        ("三分之一", r"\frac{1}{3}"),
        ("共有十二个", "共有12个"),
        ("一百零五", "105"),
        ("一共有5个", "一共有5个"),  # `一共` is a word, not a one
    ],
)
def test_chinese_numbers(text: str, expected: str) -> None:
    assert chinese_numbers(text) == expected


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("负5", "-5", True),
        ("负5", "5", False),
        ("负0.5", r"-\frac{1}{2}", True),
        (r"负\frac{1}{2}", "-0.5", True),
        ("答：负三", "-3", True),
        ("答：这个数是负5。", "-5", True),
        ("18万", "180000", True),
        ("18万", "18", False),
        ("3.5万人", "35000", True),
        ("百分之二十", "20%", True),
        ("百分之二十", "0.2", True),
        ("百分之二十", "2", False),
        ("三分之二", r"\frac{2}{3}", True),
        ("答：27.3%。", "27.3%", True),  # a final 。 after % or )
        ("答：(9/22)。", r"\frac{9}{22}", True),
        ("答：共有12个。", "12", True),
        ("答：共有十二个。", "12", True),
        ("解：3+4=7\n答：一共有7个苹果。", "7", True),
        ("答：小明有12个，小红有15个。", "12", False),  # two values
        ("答:45元.", "45", True),
        ("５千克", "5", True),
    ],
)
def test_chinese_answers(pred: str, ref: str, equal: bool) -> None:
    assert grade(pred, ref) is equal


def test_boxes_side_by_side() -> None:
    assert predicted_answer(r"so \boxed{2}, \boxed{-3}.") == "2, -3"
    assert predicted_answer(r"a = \boxed{2} and b = \boxed{3}") == "3"  # words between
    assert predicted_answer(r"\boxed{1} first; then \boxed{2} or \boxed{3}") == "2, 3"


def test_answer_line_is_the_prediction() -> None:
    assert predicted_answer("解：3+4=7\n答：共有7个。") == "答：共有7个。"
    assert predicted_answer("step one\nstep two") is None


# --- empty answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref"),
    [("", ""), ("  ", ""), (r"\boxed{}", ""), ("$$", "$$"), ("5", ""), ("", "5"), ("。", "。")],
)
def test_empty_is_never_correct(pred: str, ref: str) -> None:
    assert not grade(pred, ref)


# --- recall on the benchmark golds ----------------------------------------------------------------


def test_benchmark_golds_in_every_style() -> None:
    items = []
    for name in NAMES:
        path = BENCHMARKS / f"{name}.jsonl"
        if not path.exists():
            pytest.skip(f"benchmark file {path} absent")
        with open(path, encoding="utf-8") as f:
            golds = [reference_answer(json.loads(line), name) for line in f]
        for gold in golds:
            for style in (r"\boxed{{{}}}", "{}", "#### {}", "答：{}。", "Step 1\n#### {}"):
                items.append((style.format(gold), gold))
    verdicts = grade_many(items)
    misses = [item for item, verdict in zip(items, verdicts, strict=True) if not verdict]
    assert not misses, misses[:20]
    assert len(items) > 18_000


@pytest.mark.parametrize(
    ("solution", "reference", "expected"),
    [
        ("She has 3 + 15 = 18 apples.\nThe answer is: 18", "18", True),
        ("So x = 1/2.\nThe answer is: $\\frac{1}{2}$.", "1/2", True),
        ("The answer is: 17", "18", False),
        ("First the answer is 3, then we check.\nThe answer is: 4", "3", False),
    ],
)
def test_metamath_answer_is_lines(solution, reference, expected):
    """MetaMath-Mistral-7B ends its chain of thought with `The answer is: X` (no box)."""
    assert grade(solution, reference) is expected
