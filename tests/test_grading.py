"""Tests of scdpo.grading: extraction, each normalisation, time limits, and the benchmark bars."""

from __future__ import annotations

import json
import logging
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from scdpo.grading import (
    extract_answer,
    grade,
    grade_many,
    normalize,
    reference_answer,
    repair_quirks,
    stats,
)
from scdpo.grading.audit import main as audit_main

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"


def _load(name: str) -> list[dict]:
    path = BENCHMARKS / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"benchmark file {path} absent (CI clones shared/ beside the repo)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# --- extraction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{1} first, then \boxed{\{1, \sqrt{2}\}}", r"\{1, \sqrt{2}\}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5.", "5."),
        ("<|text|>x<|endofblock|><|text|>It is \\boxed{18}.<|endofblock|><|endofmessage|>", "18"),
        ("no box here", None),
        (r"\boxed{unclosed", None),
        (r"\boxed{1} then truncated \boxed{2", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_reference_answer_formats() -> None:
    assert reference_answer({"question": "q", "extra": {"answer": " 18 "}}) == "18"
    assert reference_answer({"answer": "7"}) == "7"
    assert reference_answer({"extra": {"solution": "so\n#### 2,125"}}, "gsm8k") == "2125"
    assert reference_answer({"extra": {"solution": "#### the300"}}) == "300"
    assert reference_answer({"extra": {"solution": "so\n#### 3/4"}}) == "3/4"  # not 4
    assert reference_answer({"extra": {"solution": r"is $\boxed{\pi}$"}}, "math") == r"\pi"
    with pytest.raises(ValueError):
        reference_answer({"question": "q"})


# --- normalisation: one test per rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("2,125", "2125"),  # thousands separators
        (r"90{,}900{,}909", "90900909"),
        (r"1\,000", "1000"),
        ("18.00", "18"),  # trailing zeros
        ("0.50", r"\frac{1}{2}"),
        (r"5 \text{ cm}", "5"),  # units and \text{}
        (r"45 \text{ units}^2", "45"),
        (r"10\;\text{edges}", "10"),
        ("18 dollars", "18"),
        (r"90^\circ", "90"),  # degrees
        (r"90^{\circ}", "90"),
        ("90°", "90"),
        (r"\$18", "18"),  # currency
        (r"\$18.00", "18"),
        (r"20\%", "20%"),  # percent
        ("20%", "0.2"),
        ("20", "20%"),
        ("x = 3", "3"),  # assignment
        (r"\theta = 30", "30"),
        ("(A)", "A"),  # choice letters
        (r"\text{(D)}", "D"),
        (r"\textbf{(B)}", "(B)"),
        ("17", "25_{6}"),  # base subscripts are values
        ("25_6", "25_{6}"),
        ("26", "11010_2"),
        (r"\dfrac{3}{4}", r"\frac34"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\sqrt 2", r"\sqrt{2}"),
        ("5 or 6", r"5 \text{ or } 6"),
        (r"5, 6", r"5 \text{ or } 6"),
        (r"\frac{9}{22}", "(9/22)"),  # Chinese datasets
        ("40/11", "3(7/11)"),
        ("45元", "45"),
        ("27.3%", "27.3%"),
        ("1.9", r"1\frac{9}{10}"),
        ("220", "10/(0.4-0.35)+20"),  # APE answers can be arithmetic
        ("１８％", "18%"),  # full-width forms
        ("18 个", "18"),
        ("答：18", "18"),
        ("2+3=5", "5"),  # a computation's last side
        (r"\mathbf{a}+\mathbf{b}", "a+b"),
        ("0.333333", r"\frac{1}{3}"),  # math-verify's rounding rule for decimals
    ],
)
def test_equal_after_normalisation(pred: str, ref: str) -> None:
    assert grade(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("5", r"5 \text{ or } 6"),  # a list is not one of its members
        ("25", "25_{6}"),  # 25 in base 6 is 17
        ("(1,2)", "12"),  # a tuple is not a number with a thousands separator
        ("1,2", "12"),
        ("B", "(A)"),
        ("0.2%", "20%"),
        ("18.01", "18"),
        ("3(7/11)", "21/11"),  # mixed number, not a product
        (r"\text{even}", r"\text{odd}"),
        ("", "0"),
        ("0.33", r"\frac{1}{3}"),
        ("10x-4y-5z-20=0", "0"),  # an equation in variables is not the value of its right side
        ("(1,3)", "13"),  # shapes differ: a tuple is never a number
        (r"\begin{pmatrix}1\\3\end{pmatrix}", "(1,3)"),
        ("x+3", "516"),
        ("甲", "乙"),
    ],
)
def test_not_equal(pred: str, ref: str) -> None:
    assert not grade(pred, ref)


def test_thousands_only_outside_tuples() -> None:
    assert normalize("(1,234)") == "(1,234)"
    assert normalize("1,234") == "1234"


def test_repair_math500_matrix_rows() -> None:
    # The MATH500 answer field lost one backslash of each `\\` row separator.
    damaged = r"\begin{pmatrix}4&2\-1&1\end{pmatrix}"
    assert repair_quirks(damaged) == r"\begin{pmatrix}4&2\\-1&1\end{pmatrix}"
    assert grade(r"\begin{pmatrix} 4 & 2 \\ -1 & 1 \end{pmatrix}", damaged)


def test_repair_math500_empty_sqrt() -> None:
    # `\sqrt 2` became `\sqrt{}2`, and `\ ` (a space) became a lone `\` before a digit.
    damaged = r"1+\sqrt{}2,\1-\sqrt{}2"
    assert repair_quirks(damaged) == r"1+\sqrt{2}, 1-\sqrt{2}"
    assert grade(r"1+\sqrt 2,\ 1-\sqrt 2", damaged)


def test_symbolic_equivalence() -> None:
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")
    assert grade(r"The answer is $\boxed{2x^2-2x+3}$.", "3-2x+2x^2")
    assert not grade(r"\boxed{2x^2+2x+3}", "2x^2-2x+3")


def test_whole_solution_without_a_box_is_wrong() -> None:
    assert not grade(r"\boxed{18} no, wait: \boxed{1", "18")
    assert not grade("<|text|>I think 18<|endofblock|><|endofmessage|>", "18")
    assert not grade("Step 1: 9 * 2\nso 18", "18")


def test_never_raises() -> None:
    assert grade(r"\frac{", "}") is False
    assert grade(r"\boxed{\frac{1}{0}}", "1") is False


# --- time limit and threads ---------------------------------------------------------------------


def test_pathological_input_is_cut_at_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    before = stats.timeouts
    with caplog.at_level(logging.WARNING, logger="scdpo.grading"):
        assert grade(r"9^{9^{9^{9}}}", "1", timeout=1.0) is False
    assert stats.timeouts == before + 1
    assert "counted as not equal" in caplog.text
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")  # the worker was replaced


def test_grade_from_non_main_thread() -> None:
    results: list[bool] = []
    pairs = [(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), ("x+1", "1+x"), ("3", "4")]

    def work() -> None:
        results.extend(grade(pred, ref) for pred, ref in pairs)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 4 and results.count(False) == 2


def test_grade_many_order_and_limit() -> None:
    items = [("1", "1"), (r"9^{9^{9^{9}}}", "1"), (r"\sqrt{4}", "2"), ("x+1", "1+x"), ("2", "3")]
    assert grade_many(items, processes=2, timeout=1.0) == [True, False, True, True, False]
    assert grade_many([]) == []


# --- bars on the real benchmark files -----------------------------------------------------------


def test_math500_reference_solutions() -> None:
    records = _load("math500_test")
    items = [(r["extra"]["solution"], r["extra"]["answer"]) for r in records]
    verdicts = grade_many(items)
    misses = [a for (_, a), v in zip(items, verdicts, strict=True) if not v]
    assert sum(verdicts) >= 499, misses


def test_gsm8k_reference_solutions() -> None:
    records = _load("gsm8k_test")
    refs = [reference_answer({"extra": {"solution": r["extra"]["solution"]}}) for r in records]
    verdicts = grade_many(zip(refs, (r["extra"]["answer"] for r in records), strict=True))
    assert sum(verdicts) == len(records) == 1319


@pytest.mark.parametrize("name", ["math500_test", "gsm8k_test"])
def test_neighbouring_answers_differ(name: str) -> None:
    answers = [r["extra"]["answer"] for r in _load(name)]
    pairs = [(a, b) for a, b in pairwise(answers) if a != b]
    verdicts = grade_many(pairs)
    assert not any(verdicts), [p for p, v in zip(pairs, verdicts, strict=True) if v]


@pytest.mark.parametrize("name", ["cmath_test", "ape500_test", "mgsm_zh_test"])
def test_chinese_answers_in_model_notation(name: str) -> None:
    # The model writes `\frac{9}{22}` for `(9/22)` and `20\%` for `20%`; both must match.
    answers = [reference_answer(r, name) for r in _load(name)]
    latex = [a.replace("%", r"\%") for a in answers]
    assert all(grade_many(zip(latex, answers, strict=True)))
    # `40` against `40%` is equal by design (a dropped percent sign), so such pairs are skipped.
    pairs = [(a, b) for a, b in pairwise(answers) if a.rstrip("%") != b.rstrip("%")]
    verdicts = grade_many(pairs)
    assert not any(verdicts), [p for p, v in zip(pairs, verdicts, strict=True) if v]


def test_audit_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "preds.jsonl"
    records = [
        {"answer": "2125", "prediction": r"so \boxed{2,125}"},
        {
            "answer": r"\begin{pmatrix}6\3\end{pmatrix}",
            "blocks": [
                {"kind": "text", "content": r"\boxed{\begin{pmatrix} 6 \\ 3 \end{pmatrix}}"}
            ],
        },
        {"answer": "3", "samples": [{"blocks": [{"kind": "text", "content": r"\boxed{4}"}]}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert audit_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "ours: 2 equal" in out and "disagreements:" in out


def test_audit_benchmark_records_and_missing_checkers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A benchmark record without a solution is audited as its gold written in four styles.
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"question": "q", "extra": {"answer": "3/4"}}) + "\n")
    assert audit_main([str(path), "--show", "5"]) == 0
    out = capsys.readouterr().out
    assert "4 items" in out and "ours: 4 equal (100.0%)" in out
    assert "gold='3/4'" in out  # math-verify alone misses `答：3/4。`
    assert "not installed" in out or "ours vs minerva" in out


def test_audit_lists_every_disagreement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 28: a user reviews the grader on their own outputs, every disagreement with its line.
    path, out = tmp_path / "preds.jsonl", tmp_path / "disagreements.jsonl"
    records = [{"answer": str(n), "prediction": f"解：\n答：共有{n}个。"} for n in range(60)]
    records.append({"answer": "0.0000013", "prediction": r"\boxed{0.0000012}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert audit_main([str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 61 and all(r["ours"] != r["math-verify"] for r in rows)
    assert "more (--show)" not in printed
    assert {"where", "pred", "pred_normalised", "gold", "solution_end"} <= set(rows[0])
    for row in rows:
        assert f"{row['where']}: ours={int(row['ours'])}" in printed
    assert any(r["where"] == "line 61" and not r["ours"] for r in rows)  # tiny decimals
