"""The README's result figures are the files that perf/default_run.py writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("default_run", REPO / "perf/default_run.py")
default_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(default_run)

RESULT_FILES = sorted((REPO / "docs" / "results").glob("*.md"))


def test_there_are_result_files():
    assert RESULT_FILES, "docs/results/*.md: run perf/default_run.py --readme"


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_readme_quotes_the_result_file_verbatim(path: Path):
    readme = (REPO / "README.md").read_text()
    quoted = default_run.readme_excerpt(path.read_text(), path.stem)
    assert default_run.readme_block(readme, path.stem) == quoted


def test_a_result_with_full_tables_is_quoted_up_to_them_with_a_link():
    result = f"head\n\n{default_run.FULL_TABLES}\n\n**Paired differences**\n"
    excerpt = default_run.readme_excerpt(result, "small")
    assert excerpt.startswith("head\n") and "Paired differences" not in excerpt
    assert "[docs/results/small.md](docs/results/small.md)" in excerpt
    assert default_run.readme_excerpt("head\n", "default") == "head\n"


def test_replacing_a_block_keeps_the_rest_of_the_readme():
    begin, end = default_run.markers("x")
    text = f"intro\n{begin}\nold\n{end}\noutro\n"
    new = default_run.replace_block(text, "x", "new table\n")
    assert new == f"intro\n{begin}\nnew table\n{end}\noutro\n"
    assert default_run.readme_block(new, "x") == "new table\n"


@pytest.mark.slow
def test_summary_of_a_real_run_has_the_accuracy_table_and_the_time_per_stage(micro_run):
    facts = {"commit": "abc", "config": "config/micro.yaml", "machine": "test"}
    text = default_run.summary(micro_run, wall=100.0, cores=2, facts=facts)
    assert (micro_run / "results" / "accuracy.md").read_text().strip() in text
    times = default_run.job_times(micro_run)
    assert {"sft_train", "dpo_train", "eval_predict"} <= set(times.index)
    assert times.loc["dpo_train", "jobs"] == 4  # micro trains Step-DPO too
    assert "of 2 cores busy" in text and "| sft_train" in text
    assert "Paired differences" not in text
    # With intervals (a seeded config): Table 1 with confidence follows, headings made bold.
    full = default_run.summary(micro_run, 100.0, 2, facts, with_intervals=True)
    assert full.startswith(text.rstrip("\n"))
    assert "**Paired differences on the same questions**" in full and "\n## " not in full
    assert "SCDPO - Step-DPO" in full
    assert default_run.FULL_TABLES in full and "Paired" not in default_run.readme_excerpt(full, "m")


def test_seeded_or_powered_configs_print_table_1_with_confidence():
    assert default_run.wants_intervals(REPO / "config" / "small.yaml")
    assert not default_run.wants_intervals(REPO / "config" / "config.yaml")
