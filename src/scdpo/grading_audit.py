"""Audit: grade the same items with our grader and with math-verify used bare; print disagreements.

    python -m scdpo.grading_audit FILE.jsonl [FILE.jsonl ...] [--show N] [--processes P]

Items per record: a benchmark record (`extra.solution` against its answer), a prediction record
(`blocks` or `prediction`/`response`/`completion`/`output`/`solution` against `answer`), or a
sampling record (each of `samples[*].blocks` against `answer`). Bare math-verify means
`verify(parse(gold), parse(pred))` with its defaults, the gold wrapped as `$...$` (unwrapped
gold is worse still: `--unwrapped-gold` shows by how much) and the whole solution text as pred.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from scdpo.grading import grade_many, predicted_answer, reference_answer

logger = logging.getLogger("scdpo.grading")

_TEXT_FIELDS = ("prediction", "response", "completion", "output", "solution")


def _blocks_text(blocks: list) -> str:
    return "\n".join(b["content"] if isinstance(b, dict) else str(b) for b in blocks)


def _solutions(record: dict) -> list[str]:
    """The solution texts a record holds, in the formats listed in the module docstring."""
    if isinstance(record.get("samples"), list):
        return [_blocks_text(s.get("blocks", [])) for s in record["samples"]]
    if isinstance(record.get("blocks"), list):
        return [_blocks_text(record["blocks"])]
    for field in _TEXT_FIELDS:
        if isinstance(record.get(field), str):
            return [record[field]]
    extra = record.get("extra") or {}
    return [extra["solution"]] if isinstance(extra.get("solution"), str) else []


def read_items(path: Path) -> Iterator[tuple[str, str]]:
    """(solution, reference) pairs of a JSONL file; records without both are skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            try:
                reference = reference_answer(record)
            except ValueError:
                continue
            for solution in _solutions(record):
                yield solution, reference


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


def audit(path: Path, show: int, processes: int, wrap_gold: bool) -> int:
    """Print the comparison for one file; returns the number of disagreements."""
    items = list(read_items(path))
    ours = grade_many(items, processes=processes)
    bare = bare_verdicts(items, wrap_gold)
    differ = [i for i, (a, b) in enumerate(zip(ours, bare, strict=True)) if a != b]
    only_ours = sum(ours[i] for i in differ)
    print(f"== {path}: {len(items)} items")
    print(f"ours: {sum(ours)} equal; bare math-verify: {sum(bare)} equal")
    print(
        f"disagreements: {len(differ)} (ours equal only: {only_ours}, "
        f"bare equal only: {len(differ) - only_ours})"
    )
    for i in differ[:show]:
        solution, reference = items[i]
        pred = predicted_answer(solution)
        print(f"  #{i}: ours={int(ours[i])} bare={int(bare[i])}  pred={pred!r}  gold={reference!r}")
    if len(differ) > show:
        print(f"  ... {len(differ) - show} more (--show)")
    return len(differ)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scdpo.grading_audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--show", type=int, default=50, help="disagreements listed per file")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--unwrapped-gold",
        action="store_true",
        help="pass the gold to bare math-verify as is, not as $...$",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    total = sum(audit(p, args.show, args.processes, not args.unwrapped_gold) for p in args.files)
    print(f"total disagreements: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
