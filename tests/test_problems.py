import json
from pathlib import Path

import pytest
from fakes import source
from paper_shaped import write_hub_dataset

from scdpo.grading import grade
from scdpo.jsonl import DataError
from scdpo.problems import load_jsonl_problems, load_problems, synthetic_problems
from scdpo.sandbox import run_blocks
from scdpo.solution import Block, final_text, split_points


def test_synthetic_problems_are_seeded_and_varied():
    first, again = synthetic_problems(50, seed=3), synthetic_problems(50, seed=3)
    assert first == again
    assert synthetic_problems(50, seed=4) != first
    ops = {sum(b["kind"] == "code" for b in p["blocks"]) for p in first}
    assert ops == {1, 2, 3}
    starts = {p["question"].split()[1] for p in first}
    assert len(starts) >= 3  # several templates


def test_synthetic_reference_solutions_execute_to_their_answer():
    for problem in synthetic_problems(20, seed=5):
        blocks = [Block.from_json(b) for b in problem["blocks"]]
        code = [b.content for b in blocks if b.kind == "code"]
        executions = [b.content for b in blocks if b.kind == "execution"]
        assert run_blocks(code) == executions
        assert grade(final_text(blocks), problem["answer"])
        assert split_points(blocks)  # every solution has a split point


def test_synthetic_cot_solutions_state_each_step_as_text():
    code, cot = (
        synthetic_problems(30, seed=5),
        load_problems(source({"source": "synthetic", "n": 30, "seed": 5}), solution_format="cot"),
    )
    for with_code, problem in zip(code, cot, strict=True):
        # the same draws: only the solution's format differs
        assert {k: problem[k] for k in ("id", "question", "answer")} == {
            k: with_code[k] for k in ("id", "question", "answer")
        }
        blocks = [Block.from_json(b) for b in problem["blocks"]]
        assert {b.kind for b in blocks} == {"text"}
        executions = [b["content"].strip() for b in with_code["blocks"] if b["kind"] == "execution"]
        steps = [b.content for b in blocks[:-1]]
        assert len(steps) == len(executions)
        for step, result in zip(steps, executions, strict=True):
            arithmetic, stated = step.split(". ", 1)[1].rstrip(".").split(" = ")
            assert stated == result == str(eval(arithmetic))  # noqa: S307 - generated literals
        assert grade(final_text(blocks), problem["answer"])
        assert split_points(blocks) == list(range(len(blocks) - 2))  # after every text block


def test_train_and_test_sets_do_not_share_ids():
    train = {p["id"] for p in synthetic_problems(100, seed=1, offset=0)}
    test = {p["id"] for p in synthetic_problems(100, seed=1, offset=10_000)}
    assert not train & test


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("gsm8k_test.jsonl", 1319),
        ("math500_test.jsonl", 500),
        ("cmath_test.jsonl", None),
        ("mgsm_zh_test.jsonl", None),
        ("ape500_test.jsonl", 500),
    ],
)
def test_loader_reads_the_real_benchmark_files(benchmarks_dir, name, count):
    problems = load_problems(source({"source": "jsonl", "path": str(benchmarks_dir / name)}))
    if count is not None:
        assert len(problems) == count
    assert all(p["question"] and p["answer"] for p in problems)
    assert len({p["id"] for p in problems}) == len(problems)


def test_gsm8k_reference_from_its_solution_matches_the_answer_field(benchmarks_dir):
    path = str(benchmarks_dir / "gsm8k_test.jsonl")
    from_field = load_jsonl_problems(path)
    from_solution = load_jsonl_problems(path, answer_key="extra.solution", answer_format="gsm8k")
    assert [p["answer"] for p in from_field][:50] == [p["answer"] for p in from_solution][:50]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"question": "q", "extra": {"answer": "1"}})
    path.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_jsonl_problems(path)


def test_missing_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "extra": {}}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: missing key 'extra\.answer'"):
        load_jsonl_problems(path)


def test_hf_loader_reads_a_local_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"question": "Two plus two?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"},
        {"question": "Ten minus one?", "answer": "10 - 1 = 9\n#### 9"},
    ]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "test.parquet"))
    problems = load_problems(
        source({"source": "hf", "id": str(tmp_path), "split": "test", "answer_format": "gsm8k"})
    )
    assert [p["answer"] for p in problems] == ["4", "9"]


def test_hf_loader_reads_each_local_directory_afresh(tmp_path):
    """Two run folders' `openai/gsm8k`, then new files at the first one's path: each load gives
    the files' own rows (`datasets` would cache them under the base name `gsm8k` alone)."""
    pytest.importorskip("datasets")

    def write(directory: Path, answers: list[str]) -> None:
        rows = [{"question": f"Q{a}?", "answer": f"#### {a}"} for a in answers]
        write_hub_dataset(directory, {"main": {"test": rows}})  # as openai/gsm8k: config main

    def answers(directory: Path) -> list[str]:
        block = {"source": "hf", "id": str(directory), "name": "main", "split": "test"}
        return [p["answer"] for p in load_problems(source(block | {"answer_format": "gsm8k"}))]

    first, second = tmp_path / "run1" / "gsm8k", tmp_path / "run2" / "gsm8k"
    write(first, ["1", "2", "3"])
    write(second, ["4", "5"])
    assert answers(first) == ["1", "2", "3"]
    assert answers(second) == ["4", "5"]
    write(first, ["6"])
    assert answers(first) == ["6"]


def test_hf_loader_reads_several_configurations_laid_out_like_the_hub(tmp_path):
    """EleutherAI/hendrycks_math has one configuration per subject and no `all`."""
    datasets = pytest.importorskip("datasets")
    card = ["---", "configs:"]
    for subject, answer in (("algebra", "3"), ("geometry", "\\frac{1}{2}")):
        (tmp_path / subject).mkdir()
        rows = [{"problem": f"A {subject} problem?", "solution": f"So \\boxed{{{answer}}}."}]
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / subject / "train.parquet"))
        card += [
            f"- config_name: {subject}",
            "  data_files:",
            "  - split: train",
            f"    path: {subject}/train.parquet",
        ]
    (tmp_path / "README.md").write_text("\n".join([*card, "---", ""]))
    block = {
        "source": "hf",
        "id": str(tmp_path),
        "name": ["algebra", "geometry"],
        "split": "train",
        "question_key": "problem",
        "answer_key": "solution",
        "answer_format": "boxed",
    }
    problems = load_problems(source(block))
    assert [(p["id"], p["answer"]) for p in problems] == [
        ("algebra/0", "3"),
        ("geometry/0", "\\frac{1}{2}"),
    ]


def test_hf_loader_reads_metamath_style_sft_solutions(tmp_path):
    """MetaMathQA: the response is the chain of thought, its last line `The answer is: X`."""
    datasets = pytest.importorskip("datasets")
    response = "Tom has 3 apples.\n\nHe buys 4 more, so 3 + 4 = 7.\nThe answer is: 7"
    rows = [{"query": "How many apples?", "response": response}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    block = {
        "source": "hf",
        "id": str(tmp_path),
        "split": "train",
        "question_key": "query",
        "answer_key": "response",
        "answer_format": "answer_is",
        "solution_key": "response",
    }
    (problem,) = load_problems(source(block), solution_format="cot")
    assert problem["answer"] == "7"
    assert [b["kind"] for b in problem["blocks"]] == ["text", "text"]
    assert grade(final_text([Block.from_json(b) for b in problem["blocks"]]), "7")


# --- data checks: gold answers, ids, encodings ---------------------------------------------------


def _jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


GOOD = {"question": "One plus one?", "extra": {"answer": "2"}}


@pytest.mark.parametrize(
    ("answer", "what"), [(None, "null"), ("", "empty"), ("  ", "empty"), ({}, "a JSON object")]
)
@pytest.mark.parametrize("answer_format", ["plain", "gsm8k"])
def test_a_null_or_empty_gold_answer_names_file_line_and_key(tmp_path, answer, what, answer_format):
    """Before, null became the answer "None" and an empty answer was accepted."""
    good = {"question": "q", "extra": {"answer": "#### 2" if answer_format == "gsm8k" else "2"}}
    path = _jsonl(tmp_path / "bench.jsonl", good, {"question": "q", "extra": {"answer": answer}})
    with pytest.raises(
        DataError, match=rf"bench\.jsonl:2: key 'extra\.answer' \(the gold answer\) is {what}"
    ):
        load_jsonl_problems(path, answer_format=answer_format)


def test_a_gold_answer_found_empty_in_its_field_is_an_error(tmp_path):
    path = _jsonl(tmp_path / "b.jsonl", {"question": "q", "extra": {"answer": "So \\boxed{ }."}})
    with pytest.raises(
        DataError, match=r"b\.jsonl:1: key 'extra\.answer' .* has nothing in a \\boxed"
    ):
        load_jsonl_problems(path, answer_format="boxed")


def test_numbers_are_gold_answers_as_written(tmp_path):
    path = _jsonl(tmp_path / "b.jsonl", {"question": "q", "extra": {"answer": 0}})
    assert load_jsonl_problems(path)[0]["answer"] == "0"


def test_hf_rows_with_a_null_gold_answer_name_the_row_and_key(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": "Two?", "answer": "#### 2"}, {"question": "Three?", "answer": None}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "test.parquet"))
    block = {"source": "hf", "id": str(tmp_path), "split": "test", "answer_format": "gsm8k"}
    with pytest.raises(DataError, match=r"row 1: key 'answer' \(the gold answer\) is null"):
        load_problems(source(block))


def test_a_duplicate_id_within_a_file_names_the_file_and_the_id(tmp_path):
    rows = [{**GOOD, "id": f"q{i}"} for i in (1, 2, 3)] + [
        {**GOOD, "extra": {"answer": "2", "id": "q2"}}
    ]
    path = _jsonl(tmp_path / "bench.jsonl", *rows)
    with pytest.raises(DataError, match=r"bench\.jsonl:4: duplicate id 'q2' \(first on line 2\)"):
        load_jsonl_problems(path)


def test_ids_colliding_across_sources_name_the_id_and_both_sources(tmp_path):
    from scdpo.problems import prepare_problems

    first = _jsonl(tmp_path / "a.jsonl", {**GOOD, "id": "7"})
    second = _jsonl(tmp_path / "b.jsonl", {**GOOD, "id": "7"})
    sources = [source({"source": "jsonl", "path": str(p)}) for p in (first, second)]
    out = tmp_path / "problems.jsonl"
    with pytest.raises(
        DataError,
        match=rf"id '7' of source jsonl {second} is also an id of source jsonl {first}: give each",
    ):
        prepare_problems(sources, "code", str(out))
    assert not out.exists()
    sources[1]["tag"] = "b"
    prepare_problems(sources, "code", str(out))
    assert [p["id"] for p in load_jsonl_problems(out, answer_key="answer")] == ["7", "b:7"]


def test_a_latin_1_file_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "question": "Combien coûte le café ?"}, ensure_ascii=False),
    ]
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(
        DataError, match=r"latin1\.jsonl:2: not UTF-8 \(byte 0xfb at column \d+\); convert"
    ):
        load_jsonl_problems(path)


def test_a_leading_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    text = json.dumps({**GOOD, "question": "Wie viel kostet ein Brötchen?"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + f"{text}\n{json.dumps(GOOD)}\n".encode())
    problems = load_jsonl_problems(path)
    assert [p["question"] for p in problems] == ["Wie viel kostet ein Brötchen?", "One plus one?"]
    assert [p["id"] for p in problems] == ["1", "2"]
