"""Problems: the embedded synthetic generator and the loaders of real datasets.

Every source yields the same record: {"id", "question", "answer"} and, for SFT data, "blocks"
(a reference solution as a list of {"kind", "content"}).
"""

from __future__ import annotations

import hashlib
import logging
import random
import tempfile
from pathlib import Path

from scdpo.jsonl import DataError, read_jsonl, require, write_jsonl
from scdpo.solution import Block, cot_blocks, render_prompt, render_solution

log = logging.getLogger(__name__)

# --- synthetic arithmetic word problems ---------------------------------------------------------

NAMES = ["Tom", "Ana", "Ben", "Mia", "Leo", "Eva", "Sam", "Zoe", "Max", "Ida"]
ITEMS = ["apples", "pens", "cards", "books", "coins", "shells", "stamps", "eggs"]

# One story per template: how the amount starts, and how each operation is told.
TEMPLATES = [
    {
        "start": "{name} has {a} {item}.",
        "add": "Then {name} gets {b} more {item}.",
        "sub": "Then {name} gives away {b} {item}.",
        "mul": "Then {name} ends up with {b} times as many {item}.",
        "ask": "How many {item} does {name} have now?",
    },
    {
        "start": "A box holds {a} {item}.",
        "add": "Someone puts {b} more {item} in the box.",
        "sub": "Someone takes {b} {item} out of the box.",
        "mul": "The number of {item} in the box grows {b} times.",
        "ask": "How many {item} are in the box now?",
    },
    {
        "start": "A shop starts the day with {a} {item}.",
        "add": "It receives {b} {item}.",
        "sub": "It sells {b} {item}.",
        "mul": "Its stock of {item} becomes {b} times as large.",
        "ask": "How many {item} does the shop have at the end?",
    },
]
OPERATIONS = {"add": "+", "sub": "-", "mul": "*"}
STEP_TEXT = {"add": "Add {b}.", "sub": "Subtract {b}.", "mul": "Multiply by {b}."}


def _operand(op: str, value: int, rng: random.Random) -> int:
    if op == "mul":
        return rng.randint(2, 4)
    if op == "sub":
        return rng.randint(1, max(1, value - 1))
    return rng.randint(1, 30)


def synthetic_problem(
    rng: random.Random, index: int, max_ops: int = 3, solution_format: str = "code"
) -> dict:
    """One word problem with 1..max_ops operations and its reference solution.

    Both formats come from the same draws: "code" computes each step in a code block and reads the
    result from its execution block; "cot" writes the step's arithmetic as text.
    """
    template = rng.choice(TEMPLATES)
    words = {"name": rng.choice(NAMES), "item": rng.choice(ITEMS)}
    value = rng.randint(2, 40)
    sentences = [template["start"].format(a=value, **words)]
    blocks = []
    for step in range(rng.randint(1, max_ops)):
        op = rng.choice(["add", "mul"] if value < 3 else list(OPERATIONS))
        operand = _operand(op, value, rng)
        sentences.append(template[op].format(b=operand, **words))
        left = str(value) if step == 0 else "x"
        arithmetic = f"{value} {OPERATIONS[op]} {operand}"
        value = eval(arithmetic)  # noqa: S307 - our own literals
        step_text = STEP_TEXT[op].format(b=operand)
        if solution_format == "cot":
            blocks.append(Block("text", f"{step_text} {arithmetic} = {value}."))
            continue
        blocks += [
            Block("text", step_text),
            Block("code", f"x = {left} {OPERATIONS[op]} {operand}\nprint(x)"),
            Block("execution", f"{value}\n"),  # as print() writes it
        ]
    sentences.append(template["ask"].format(**words))
    blocks.append(Block("text", f"The answer is \\boxed{{{value}}}."))
    return {
        "id": f"synthetic-{index}",
        "question": " ".join(sentences),
        "answer": str(value),
        "blocks": [block.to_json() for block in blocks],
    }


def synthetic_problems(
    n: int, seed: int, max_ops: int = 3, offset: int = 0, solution_format: str = "code"
) -> list[dict]:
    """n seeded problems; `offset` keeps ids (and draws) of train and test sets apart."""
    rng = random.Random(f"{seed}-{offset}")
    return [synthetic_problem(rng, offset + i, max_ops, solution_format) for i in range(n)]


# --- real datasets ------------------------------------------------------------------------------


# answer_format -> (how the gold answer is found in the field's text, what it must contain)
ANSWER_FORMATS = {
    "gsm8k": ("gsm8k_answer", "a '#### N' line"),
    "boxed": ("extract_answer", "a \\boxed{}"),
    "answer_is": ("answer_is", "a 'The answer is: X' line"),
}


def _gold_answer(raw: object, answer_format: str, where: str, key: str) -> str:
    """The gold answer in a dataset field: as written (`plain`) or found as the grader finds a
    model's answer (`#### N`, the last box, MetaMath's `The answer is: X`). A null or empty one
    is an error (str() would make null the answer "None")."""
    from scdpo.grading import extract

    if raw is None or isinstance(raw, (dict, list)):
        what = "null" if raw is None else "a JSON object or array, not text or a number"
        raise DataError(f"{where}: key '{key}' (the gold answer) is {what}")
    text = str(raw).strip()
    if not text:
        raise DataError(f"{where}: key '{key}' (the gold answer) is empty")
    if answer_format == "plain":
        return text
    finder, what = ANSWER_FORMATS[answer_format]
    answer = getattr(extract, finder)(text)
    if answer is None:
        raise DataError(f"{where}: key '{key}' (the gold answer) lacks {what}")
    if not answer.strip():
        raise DataError(f"{where}: key '{key}' (the gold answer) has nothing in {what}")
    return answer


def _sft_blocks(
    record: dict, where: str, solution_format: str, solution_key: str = "solution"
) -> list[dict] | None:
    """A reference solution for SFT: a list of blocks, or (cot) a text to split into steps."""
    if "blocks" in record:
        blocks = record["blocks"]
        if not isinstance(blocks, list) or not all(
            isinstance(b, dict) and {"kind", "content"} <= b.keys() for b in blocks
        ):
            raise DataError(f"{where}: key 'blocks' must be a list of {{kind, content}} objects")
        return blocks
    if solution_format == "cot" and solution_key in record:
        return [block.to_json() for block in cot_blocks(str(record[solution_key]))]
    return None


def load_jsonl_problems(
    path: str | Path,
    question_key: str = "question",
    answer_key: str = "extra.answer",
    answer_format: str = "plain",
    solution_format: str = "code",
) -> list[dict]:
    """Local JSONL in the benchmark format: `question` and `extra.answer` on every line. Ids
    (`id`, `extra.id`, else the line number) are unique within the file."""
    problems = []
    first_line: dict[str, int] = {}
    for number, record in enumerate(read_jsonl(path), start=1):
        where = f"{path}:{number}"
        question = require(record, question_key, where)
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: key '{question_key}' must be a non-empty string")
        answer = _gold_answer(require(record, answer_key, where), answer_format, where, answer_key)
        item_id = str(record.get("id") or (record.get("extra") or {}).get("id") or number)
        if item_id in first_line:
            raise DataError(
                f"{where}: duplicate id '{item_id}' (first on line {first_line[item_id]}): "
                "ids must be unique within a file"
            )
        first_line[item_id] = number
        problem = {"id": item_id, "question": question, "answer": answer}
        blocks = _sft_blocks(record, where, solution_format)
        if blocks is not None:
            problem["blocks"] = blocks
        problems.append(problem)
    return problems


def _hf_rows(dataset_id: str, name: str | None, split: str):
    """One split of a dataset: a hub id is read from its snapshot in the hub cache (scdpo.hub;
    the data rules run on the login node, which fetches a snapshot not there yet, and a job with
    the hub offline fails naming the dataset and the fetch rule), a local directory as it is.
    Either folder is read afresh: `datasets` caches a local directory under its base name and
    configuration alone, so another directory of that name (`openai/gsm8k` in another run
    folder), or new files at the same path, would come back as the first one's rows."""
    import datasets

    from scdpo import hub

    folder = hub.local_dir(dataset_id, "dataset", download=True)
    if folder != dataset_id:
        # A snapshot's folder names its commit: its Arrow files can stay (and stay lazy).
        snapshot = Path(folder)
        cache = Path(datasets.config.HF_DATASETS_CACHE, "scdpo", snapshot.parts[-3], snapshot.name)
        return datasets.load_dataset(folder, name, split=split, cache_dir=str(cache))
    with tempfile.TemporaryDirectory(prefix="scdpo-dataset-") as cache:
        return list(datasets.load_dataset(folder, name, split=split, cache_dir=cache))


def load_hf_problems(
    dataset_id: str,
    split: str,
    names: str | list[str] | None = None,
    question_key: str = "question",
    answer_key: str = "answer",
    answer_format: str = "plain",
    solution_format: str = "code",
    solution_key: str = "solution",
) -> list[dict]:
    """A Hugging Face dataset by hub id or local dataset directory (e.g. openai/gsm8k, main).

    Several configurations (`names`, e.g. the seven subjects of EleutherAI/hendrycks_math) are
    loaded one after the other; ids then read `<configuration>/<row>`. In the cot format, the
    `solution_key` column is an SFT reference solution (steps split as `solution.cot_blocks` does).
    """
    problems = []
    for name in names if isinstance(names, list) else [names]:
        rows = _hf_rows(dataset_id, name, split)
        prefix = f"{name}/" if isinstance(names, list) else ""
        for index, row in enumerate(rows):
            where = f"{dataset_id}[{name or ''}:{split}] row {index}"
            question = require(row, question_key, where)
            answer = _gold_answer(require(row, answer_key, where), answer_format, where, answer_key)
            problem = {"id": f"{prefix}{index}", "question": str(question), "answer": answer}
            blocks = _sft_blocks(dict(row), where, solution_format, solution_key)
            if blocks is not None:
                problem["blocks"] = blocks
            problems.append(problem)
    return problems


def load_problems(source: dict, solution_format: str = "code") -> list[dict]:
    """Dispatch on a config `source` block, defaults filled in (config/schema.yaml:
    problem_source; scdpo.config.fill_defaults)."""
    kind = source["source"]
    if kind == "synthetic":
        return synthetic_problems(
            source["n"], source["seed"], source["max_ops"], source["offset"], solution_format
        )
    fields = {"question_key": source["question_key"], "answer_format": source["answer_format"]}
    if kind == "jsonl":
        problems = load_jsonl_problems(
            source["path"],
            answer_key=source["answer_key"],
            solution_format=solution_format,
            **fields,
        )
    elif kind == "hf":
        problems = load_hf_problems(
            source["id"],
            source["split"],
            source.get("name"),  # optional: datasets with one configuration have none
            answer_key=source["answer_key"],
            solution_format=solution_format,
            solution_key=source["solution_key"],
            **fields,
        )
    else:
        raise ValueError(f"unknown problem source {kind!r}")
    return problems[: source["limit"]] if source.get("limit") else problems


def _describe(source: dict) -> str:
    """A source as the config names it (in errors)."""
    where = source.get("path") or source.get("id") or f"seed {source.get('seed')}"
    return f"source {source['source']} {where}"


# --- a. the workflow's problem files --------------------------------------------------------------


def prepare_problems(sources: dict | list[dict], solution_format: str, out_path: str) -> None:
    """One source or several (e.g. GSM8K and MATH train); a `tag` prefixes a source's ids."""
    problems = []
    origin: dict[str, str] = {}  # id -> the source it came from
    for source in sources if isinstance(sources, list) else [sources]:
        loaded = load_problems(source, solution_format)
        if source["source"] == "jsonl":
            digest = hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
            log.info("%s: sha256 %s, %d problems", source["path"], digest, len(loaded))
        if not loaded:
            raise ValueError(f"problem source {source} yielded no problems")
        for problem in loaded:
            if "tag" in source:
                problem["id"] = f"{source['tag']}:{problem['id']}"
            if "max_sc_pairs" in source:
                problem["max_sc_pairs"] = source["max_sc_pairs"]
            if problem["id"] in origin:
                raise DataError(
                    f"problem id '{problem['id']}' of {_describe(source)} is also an id of "
                    f"{origin[problem['id']]}: give each source a distinct `tag`"
                )
            origin[problem["id"]] = _describe(source)
        problems += loaded
    write_jsonl(out_path, problems)
    log.info("wrote %d problems to %s", len(problems), out_path)


def sft_examples(problems_path: str, system: str, out_path: str) -> None:
    """Prompt/completion pairs from problems that carry a reference solution."""
    examples = []
    for problem in read_jsonl(problems_path):
        if "blocks" not in problem:
            continue
        blocks = [Block.from_json(b) for b in problem["blocks"]]
        examples.append(
            {
                "id": problem["id"],
                "prompt": render_prompt(problem["question"], system),
                "completion": render_solution(blocks),
            }
        )
    if not examples:
        raise ValueError(f"{problems_path}: no problem has a reference solution ('blocks') for SFT")
    write_jsonl(out_path, examples)
