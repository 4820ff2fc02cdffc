"""Writes that fail leave nothing behind: atomic writes remove their temporary file, a failed
append cuts the resume file back, and a torn resume line is cut before the next append."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scdpo.jsonl import append_jsonl, atomic_write, read_jsonl, write_jsonl

# A real failing write: the process may not grow a file past 64 KiB (RLIMIT_FSIZE), so write()
# fails with EFBIG, as it fails with ENOSPC on a full disk.
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
from scdpo.jsonl import append_jsonl, write_jsonl
target, action = sys.argv[1], sys.argv[2]
records = [{"text": "x" * 1000, "i": i} for i in range(200)]  # about 200 KB
try:
    (write_jsonl if action == "write" else append_jsonl)(target, records)
except OSError as error:
    print("failed:", error.strerror)
"""


def run_limited(target: Path, action: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", LIMITED, str(target), action],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_write_that_fails_on_a_full_disk_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out" / "problems.jsonl"
    assert "failed: File too large" in run_limited(target, "write")
    assert list((tmp_path / "out").iterdir()) == []  # no problems.jsonl, no problems.jsonl.tmp


def test_a_failed_write_keeps_the_earlier_file_whole(tmp_path):
    target = tmp_path / "problems.jsonl"
    write_jsonl(target, [{"i": 0}])
    assert "failed:" in run_limited(target, "write")
    assert list(read_jsonl(target)) == [{"i": 0}]
    assert [p.name for p in tmp_path.iterdir()] == ["problems.jsonl"]


def test_an_exception_inside_an_atomic_write_removes_the_temporary_file(tmp_path):
    target = tmp_path / "marker"
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as handle:
        handle.write("half")
        raise KeyboardInterrupt  # Ctrl-C half-way
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as handle:
        handle.write("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_a_failed_append_cuts_the_file_back_to_its_whole_lines(tmp_path):
    resume = tmp_path / "shard.resume"
    append_jsonl(resume, [{"chunk": 0}])
    before = resume.read_bytes()
    assert "failed: File too large" in run_limited(resume, "append")
    assert resume.read_bytes() == before
    append_jsonl(resume, [{"chunk": 1}])
    assert list(read_jsonl(resume)) == [{"chunk": 0}, {"chunk": 1}]


def test_a_torn_resume_line_is_cut_so_later_chunks_are_read(tmp_path):
    """A kill mid-append leaves a torn last line; the chunks of the next try must not follow it
    on the same line (they would be lost to every later try)."""
    from scdpo.generation.runner import _read_resume

    resume = tmp_path / "shard.resume"
    entry = {"fingerprint": "k", "chunk": 0, "records": [{"id": "a"}]}
    whole = json.dumps(entry) + "\n"
    resume.write_text(whole + json.dumps({**entry, "chunk": 1})[:30])  # no newline: torn
    assert list(_read_resume(resume, "k")) == [0]
    assert resume.read_text() == whole
    append_jsonl(resume, [{**entry, "chunk": 1}])
    assert list(_read_resume(resume, "k")) == [0, 1]
