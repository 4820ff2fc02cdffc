"""MetaMathQA-shaped SFT data through the pipeline: loaded as steps, continued from its split
points by step-controlled generation, and counted per source in the data table (issue 25.3).

The rows are written here in the shape of meta-math/MetaMathQA (columns type, query,
original_question, response; steps on single lines, `#### N` kept in GSM8K-derived rows, every
response ending on `The answer is: N`); none is copied from the dataset.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import Future

from fakes import RUBRIC, step_control_settings
from test_solution import GSM_SHAPED, MATH_SHAPED_BRACKETS, MATH_SHAPED_DOLLARS

from scdpo.generation.backends import Completion, Request
from scdpo.generation.loop import LoopSettings, run_frontier
from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.names import STEP_CONTROLLED
from scdpo.pairs import step_controlled_pairs
from scdpo.problems import load_hf_problems, sft_examples
from scdpo.results import data_stats
from scdpo.solution import ASSISTANT, END_OF_BLOCK, END_OF_MESSAGE, Block, cot_blocks, split_points
from scdpo.step_control import StepControlTask

ROWS = [
    {
        "type": "GSM_Rephrased",
        "query": "A shop has 5 crates of 12 jars, sells 18 and receives 3 more crates. How many?",
        "original_question": "How many jars does the shop have?",
        "response": GSM_SHAPED,
    },
    {
        "type": "MATH_AnsAug",
        "query": "What is the least value of $x^2 - 6x + 13$?",
        "original_question": "What is the least value of $x^2 - 6x + 13$?",
        "response": MATH_SHAPED_DOLLARS,
    },
    {
        "type": "MATH_Rephrased",
        "query": "Two numbers add to 10 and multiply to 21. What is the sum of their squares?",
        "original_question": "Find $a^2 + b^2$.",
        "response": MATH_SHAPED_BRACKETS,
    },
]


def test_metamath_rows_load_as_steps_with_several_split_points(tmp_path):
    # A local dataset directory, loaded as config/paper.yaml loads meta-math/MetaMathQA.
    directory = tmp_path / "MetaMathQA"
    directory.mkdir()
    (directory / "train.json").write_text(json.dumps(ROWS))
    problems = load_hf_problems(
        str(directory),
        "train",
        question_key="query",
        answer_key="response",
        answer_format="answer_is",
        solution_format="cot",
        solution_key="response",
    )
    assert [p["answer"] for p in problems] == ["78", "4", "58"]
    for problem in problems:
        blocks = [Block.from_json(b) for b in problem["blocks"]]
        assert len(split_points(blocks)) >= 2
        assert blocks[-1].content.endswith(f"The answer is: {problem['answer']}")
    write_jsonl(tmp_path / "problems.jsonl", problems)
    sft_examples(str(tmp_path / "problems.jsonl"), "", str(tmp_path / "sft.jsonl"))
    first = next(iter(read_jsonl(tmp_path / "sft.jsonl")))
    assert first["completion"].count(END_OF_BLOCK) == 4 and first["completion"].endswith(
        END_OF_MESSAGE
    )


class CotContinuation:
    """Continues a MetaMath-shaped solution step by step as the reference does, but ends on a
    wrong answer (one more than the right one): what step-controlled generation looks for."""

    def __init__(self, reference: str) -> None:
        self.steps = [b.content for b in cot_blocks(reference)]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        return [self._one(r) for r in requests]

    def _one(self, request: Request) -> Completion:
        done = request.prompt.split(ASSISTANT, 1)[1].count(END_OF_BLOCK)
        if done == len(self.steps):
            return Completion("", END_OF_MESSAGE, 1)
        step = self.steps[done]
        if done == len(self.steps) - 1:
            step = re.sub(r"\d+$", lambda m: str(int(m.group()) + 1), step)
            step = step.replace("#### 78", "#### 79")
        return Completion(f"<|text|>{step}", END_OF_BLOCK, 3)


class NoCode:
    """A chain of thought runs no code: the executor must never be asked."""

    def submit(self, blocks: list[str]) -> Future[list[str]]:
        raise AssertionError(f"code submitted in a cot solution: {blocks}")


def test_step_control_continues_metamath_steps_into_step_controlled_pairs():
    chosen = cot_blocks(GSM_SHAPED)
    problem = {"id": "gsm8k:0", "question": ROWS[0]["query"], "answer": "78"}
    settings = step_control_settings(max_tries=2, max_pairs=3, rubric=RUBRIC)
    task = StepControlTask(problem, chosen, settings)
    loop = LoopSettings(max_new_tokens=64, max_calls=16, max_prompt_tokens=2000, seed=3)
    run_frontier([task], CotContinuation(GSM_SHAPED), NoCode(), loop)
    record = task.record()
    assert record["split_points"] == [0, 1]
    assert sorted(n["k"] for n in record["negatives"]) == [0, 1]
    pairs = step_controlled_pairs([record], "")
    assert len(pairs) == 2 and all(p["kind"] == STEP_CONTROLLED for p in pairs)
    for pair in pairs:
        assert pair["prompt"].endswith(END_OF_BLOCK)
        assert "The answer is: 79" in pair["rejected"] and "The answer is: 78" in pair["chosen"]


def _negatives(source: str, split_counts: list[int], found: int) -> list[dict]:
    records = []
    for i, n in enumerate(split_counts):
        negatives = [{"k": 0, "temperatures": [1.1], "blocks": []}] if i < found else []
        tries = {"0": 1} if n else {}
        records.append(
            {"id": f"{source}:{i}", "chosen": [], "split_points": list(range(n)),
             "tries": tries, "negatives": negatives}
        )  # fmt: skip
    return records


def test_data_table_shows_split_points_and_step_controlled_pairs_per_source(tmp_path):
    # gsm8k: line-split steps (3 split points each); metamath-like starved source: one block each.
    negatives = _negatives("gsm8k", [3, 3, 2], found=2) + _negatives("math", [0, 0, 1], found=0)
    pairs = {
        "dpo": [{"id": "gsm8k:0", "kind": "naive"}],
        "scdpo": [
            {"id": "gsm8k:0", "kind": STEP_CONTROLLED},
            {"id": "gsm8k:1", "kind": STEP_CONTROLLED},
        ],
    }
    table = data_stats.steps_by_source(negatives, pairs).set_index("source")
    assert table.loc["gsm8k", "split points per solution"] == round(8 / 3, 2)
    assert table.loc["gsm8k", "SCDPO step-controlled pairs"] == 2
    assert table.loc["gsm8k", "starved"] == ""
    assert table.loc["math", "split points per solution"] == round(1 / 3, 2)
    assert table.loc["math", "without a split point"] == 2
    assert table.loc["math", "SCDPO step-controlled pairs"] == 0
    assert table.loc["math", "starved"] == (
        "most solutions have no split point; no step-controlled pairs"
    )
    # In the report's page, beside the other sections.
    write_jsonl(tmp_path / "s.jsonl", [{"id": "gsm8k:0", "samples": []}])
    write_jsonl(tmp_path / "n.jsonl", negatives)
    write_jsonl(tmp_path / "p.jsonl", pairs["scdpo"])
    out = {k: str(tmp_path / f"d.{k}") for k in ("md", "html", "png", "yields", "scale")}
    data_stats.data_stats_report(
        str(tmp_path / "s.jsonl"),
        str(tmp_path / "n.jsonl"),
        {"scdpo": [str(tmp_path / "p.jsonl")]},
        None,
        out,
        "t",
    )
    md = (tmp_path / "d.md").read_text()
    assert "Split points and step-controlled pairs per source" in md
    assert "most solutions have no split point" in md
