"""Audit: the same items graded by our grader, by math-verify alone and by the Qwen2.5-Math and
Minerva checkers where they are installed; accuracy per grader and the disagreements.

    python -m scdpo.grading.audit FILE.jsonl [FILE.jsonl ...] [--show N] [--processes P]
        [--out DISAGREEMENTS.jsonl]

Items per record: a prediction record (`blocks` or `prediction`/`response`/`completion`/`output`/
`solution` against `answer`), a sampling record (each of `samples[*].blocks` against `answer`),
or a benchmark record: its `extra.solution` when it has one, else its gold written four ways
(`\\boxed{}`, bare, `#### `, `答：...。`), which shows what each grader makes of answer formats.
Blocks are read with their markers, so a code-integrated solution's execution output counts as
the grader reads it. Every disagreement is listed (`--show N`: the first N per pair) with its line
in the file, the answer we extracted and its normalised form; `--out` writes them as JSON lines.
math-verify alone means `verify(parse(gold), parse(pred))` with its defaults, the gold wrapped as
`$...$` (`--unwrapped-gold`: as is) and the whole solution text as pred. The Minerva checker
(lm-eval's `minerva_math` `is_equiv`) and the Qwen2.5-Math one (`grader.math_equal` of its
evaluation folder, on PYTHONPATH) are used when importable, else reported as not installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from scdpo.grading import grade_many, normalize, predicted_answer, reference_answer

logger = logging.getLogger("scdpo.grading")

_TEXT_FIELDS = ("prediction", "response", "completion", "output", "solution")


def _blocks_text(blocks: list) -> str:
    """Blocks as the rendered solution: with their markers (`<|text|>...<|endofblock|>`)."""
    parts = []
    for block in blocks:
        if isinstance(block, dict):
            parts.append(f"<|{block.get('kind', 'text')}|>{block.get('content', '')}<|endofblock|>")
        else:
            parts.append(str(block))
    return "".join(parts)


def _solutions(record: dict) -> list[tuple[str, str]]:
    """(where in the record, solution text) for each solution it holds (see the docstring)."""
    if isinstance(record.get("samples"), list):
        samples = record["samples"]
        return [(f"sample {i}", _blocks_text(s.get("blocks", []))) for i, s in enumerate(samples)]
    if isinstance(record.get("blocks"), list):
        return [("", _blocks_text(record["blocks"]))]
    for field in _TEXT_FIELDS:
        if isinstance(record.get(field), str):
            return [("", record[field])]
    extra = record.get("extra") or {}
    return [("", extra["solution"])] if isinstance(extra.get("solution"), str) else []


@dataclass(frozen=True)
class Item:
    solution: str
    reference: str
    where: str  # `line 12`, `line 12 sample 3`, `line 12 style 2`


def read_items(path: Path) -> Iterator[Item]:
    """The items of a JSONL file; records without a reference or a solution are skipped."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            try:
                reference = reference_answer(record)
            except ValueError:
                continue
            found = _solutions(record) or _benchmark_items(record, reference)
            for where, solution in found:
                yield Item(solution, reference, f"line {number} {where}".strip())


_STYLES = ("\\boxed{{{}}}", "{}", "#### {}", "答：{}。")


def _benchmark_items(record: dict, reference: str) -> list[tuple[str, str]]:
    """A benchmark record without a solution: its gold written in each answer style."""
    return [(f"style {i}", style.format(reference)) for i, style in enumerate(_STYLES)]


def bare_verdicts(items: list[tuple[str, str]], wrap_gold: bool = True) -> list[bool]:
    """math-verify with its defaults (signal-based timeouts: main thread only)."""
    from math_verify import parse, verify

    verdicts = []
    for solution, reference in items:
        try:
            gold = parse(f"${reference}$" if wrap_gold else reference)
            verdicts.append(bool(verify(gold, parse(solution))))
        except Exception:  # noqa: BLE001 - bare use may raise; count it as not equal
            verdicts.append(False)
    return verdicts


Checker = Callable[[list[tuple[str, str]]], list[bool]]


def _minerva() -> Checker:
    from lm_eval.tasks.minerva_math import utils  # lm-eval; not a dependency of this project

    def one(solution: str, reference: str) -> bool:
        boxed = utils.last_boxed_only_string(solution)
        pred = utils.remove_boxed(boxed) if boxed else solution
        gold = utils.normalize_final_answer(reference)
        return bool(utils.is_equiv(utils.normalize_final_answer(pred), gold))

    return lambda items: [_safe(one, s, r) for s, r in items]


def _qwen() -> Checker:
    from grader import math_equal  # Qwen2.5-Math/evaluation on PYTHONPATH; not on PyPI
    from parser import extract_answer, strip_string

    def one(solution: str, reference: str) -> bool:
        pred = extract_answer(solution, "math")
        return bool(math_equal(pred, strip_string(reference), timeout=False))

    return lambda items: [_safe(one, s, r) for s, r in items]


def _safe(check: Callable[[str, str], bool], solution: str, reference: str) -> bool:
    try:
        return check(solution, reference)
    except Exception:  # noqa: BLE001 - a third-party checker may raise; count as not equal
        return False


def checkers(processes: int, wrap_gold: bool) -> tuple[dict[str, Checker], list[str]]:
    """The graders available here, and the names of those that are not installed."""
    available: dict[str, Checker] = {
        "ours": lambda items: grade_many(items, processes=processes),
        "math-verify": lambda items: bare_verdicts(items, wrap_gold),
    }
    missing = []
    for name, load in (("qwen2.5-math", _qwen), ("minerva", _minerva)):
        try:
            available[name] = load()
        except Exception:  # noqa: BLE001 - ImportError, or a broken install of the checker
            missing.append(name)
    return available, missing


def _disagreement(item: Item, ours: bool, name: str, other: bool) -> dict:
    pred = predicted_answer(item.solution)
    return {
        "where": item.where,
        "ours": ours,
        name: other,
        "pred": pred,
        "pred_normalised": normalize(pred) if pred is not None and len(pred) < 2000 else None,
        "gold": item.reference,
        "gold_normalised": normalize(item.reference),
        "solution_end": item.solution[-300:],
    }


def audit(
    path: Path, show: int | None, graders: dict[str, Checker], out: TextIO | None = None
) -> int:
    """Print accuracy per grader and ours-vs-each disagreements (all of them unless `show`
    limits the list); write them to `out` as JSON lines; returns their number."""
    items = list(read_items(path))
    pairs = [(item.solution, item.reference) for item in items]
    verdicts = {name: check(pairs) for name, check in graders.items()}
    ours = verdicts["ours"]
    print(f"== {path}: {len(items)} items")
    for name, values in verdicts.items():
        share = 100 * sum(values) / max(1, len(items))
        print(f"{name}: {sum(values)} equal ({share:.1f}%)")
    total = 0
    for name, other in verdicts.items():
        if name == "ours":
            continue
        differ = [i for i, (a, b) in enumerate(zip(ours, other, strict=True)) if a != b]
        only_ours = sum(ours[i] for i in differ)
        total += len(differ)
        print(
            f"ours vs {name}: {len(differ)} disagreements (ours equal only: {only_ours}, "
            f"{name} equal only: {len(differ) - only_ours})"
        )
        for rank, i in enumerate(differ):
            row = _disagreement(items[i], ours[i], name, other[i])
            if out is not None:
                out.write(json.dumps({"file": str(path), **row}, ensure_ascii=False) + "\n")
            if show is None or rank < show:
                print(
                    f"  {row['where']}: ours={int(ours[i])} {name}={int(other[i])}  "
                    f"pred={row['pred']!r} -> {row['pred_normalised']!r}  gold={_gold_text(row)}"
                )
        if show is not None and len(differ) > show:
            print(f"  ... {len(differ) - show} more (--show)")
    return total


def _gold_text(row: dict) -> str:
    gold, norm = row["gold"], row["gold_normalised"]
    return f"{gold!r}" if gold == norm else f"{gold!r} -> {norm!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scdpo.grading.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument(
        "--show", type=int, default=None, help="disagreements printed per pair (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write every disagreement here as JSON lines"
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--unwrapped-gold",
        action="store_true",
        help="pass the gold to bare math-verify as is, not as $...$",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    graders, missing = checkers(args.processes, not args.unwrapped_gold)
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    with open(args.out, "w", encoding="utf-8") if args.out else nullcontext() as out:
        total = sum(audit(p, args.show, graders, out) for p in args.files)
    print(f"total disagreements: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
