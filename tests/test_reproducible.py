"""The micro run computes the numbers committed in tests/expected/: every x86-64 CPU takes the same
kernel path (scdpo.cpu), so a difference is a change of results by the code, never the machine.

When a change is meant to change results, the failure prints the command that takes the new table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scdpo.cpu import cpu_flags, portable

EXPECTED = Path(__file__).with_name("expected") / "micro_accuracy.md"


@pytest.mark.slow
def test_the_micro_runs_table_and_pair_counts_are_the_committed_ones(micro_run: Path) -> None:
    if not portable(cpu_flags()):
        pytest.skip("this CPU cannot take the pinned kernel path (x86-64 with AVX2 and FMA)")
    table = micro_run / "results" / "accuracy.md"
    assert table.read_text() == EXPECTED.read_text(), (
        f"the micro run's table differs from {EXPECTED.name}; if the change of results is meant, "
        f"take the new one: cp {table} {EXPECTED}"
    )
