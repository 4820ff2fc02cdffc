import json

import pytest
from fakes import RUBRIC, ScriptedBackend, questions, sampling_settings, step_control_settings

from scdpo.evaluate import AnswerTask
from scdpo.generation.loop import LoopSettings, run_frontier
from scdpo.generation.runner import run_resumable, shard_slice
from scdpo.sampling import SamplingTask, near_duplicate_of, stop_rule
from scdpo.sandbox import SandboxConfig, SandboxPool
from scdpo.solution import Block, split_points
from scdpo.step_control import StepControlTask, TemperatureSchedule

STOP_FIELDS = ("min_preferred", "min_dispreferred", "near_duplicate_chars")

SETTINGS = LoopSettings(max_new_tokens=16, max_calls=16, max_prompt_tokens=1000, seed=7)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout=5.0)) as pool:
        yield pool


def test_answers_run_code_in_the_sandbox_and_are_graded(pool):
    tasks = [AnswerTask(q, 0.0, RUBRIC) for q in questions(5)]
    backend = ScriptedBackend(wrong_when=lambda r: False)
    stats = run_frontier(tasks, backend, pool, SETTINGS)
    for task in tasks:
        record = task.record()
        assert [b["kind"] for b in record["blocks"]] == ["text", "code", "execution", "text"]
        # The execution block is the sandbox's real output of the model's code.
        assert record["blocks"][2]["content"] == f"{record['answer']}\n"
        assert record["correct"] and record["extracted"] == record["answer"]
    assert stats.solutions == 5 and stats.code_blocks == 5


def test_sampling_stops_once_a_pair_exists_or_k_were_drawn(pool):
    settings = sampling_settings(max_samples=12, round_size=4)
    mixed = [SamplingTask(q, settings) for q in questions(4)]
    run_frontier(mixed, ScriptedBackend(), pool, SETTINGS)
    for task in mixed:
        samples = task.record()["samples"]
        assert any(s["preferred"] for s in samples) and any(s["dispreferred"] for s in samples)
        assert len(samples) % 4 == 0 and len(samples) <= 12
    always_right = [SamplingTask(q, settings) for q in questions(2)]
    run_frontier(always_right, ScriptedBackend(wrong_when=lambda r: False), pool, SETTINGS)
    assert [len(t.record()["samples"]) for t in always_right] == [12, 12]


def _finish(partial, answer: str, filler: str = "") -> None:
    partial.blocks = [Block("text", f"So{filler} \\boxed{{{answer}}}.")]
    partial.finished = True


def test_samples_are_recorded_in_draw_order_whatever_order_they_finish():
    task = SamplingTask(questions(1)[0], sampling_settings(max_samples=4, round_size=4))
    partials = task.start()
    answer = task.problem["answer"]
    for partial in reversed(partials):  # the engine finishes the last drawn first
        _finish(partial, answer if partial.tag["draw"] % 2 else "-1")
        task.retire(partial)
    samples = task.record()["samples"]
    assert [s["draw"] for s in samples] == [0, 1, 2, 3]
    assert [s["preferred"] for s in samples] == [False, True, False, True]
    assert task.done


def test_released_stop_rule_wants_four_of_each_and_drops_near_duplicates():
    settings = sampling_settings(
        max_samples=16,
        round_size=4,
        **dict(zip(STOP_FIELDS, stop_rule("released_4_4"), strict=True)),
    )
    task = SamplingTask(questions(1)[0], settings)
    answer = task.problem["answer"]
    batch, drawn = task.start(), 0
    while batch:
        for partial in batch:
            draw = partial.tag["draw"]
            # Even draws are right, odd wrong; lengths differ by 510 characters per two draws,
            # except draws 2 and 3, which nearly repeat draws 0 and 1.
            filler = " " * (510 * (draw // 2) if draw not in (2, 3) else 10)
            _finish(partial, answer if draw % 2 == 0 else "-1", filler)
        drawn += len(batch)
        batch = [new for partial in batch for new in task.retire(partial)]
    samples = task.record()["samples"]
    assert [s.get("duplicate_of") for s in samples[:4]] == [None, None, 0, 1]
    assert not samples[2]["preferred"] and not samples[3]["dispreferred"]
    # Without the two duplicates, two rounds would have given 4 of each; a third was drawn.
    assert drawn == len(samples) == 12
    assert sum(s["preferred"] for s in samples) == sum(s["dispreferred"] for s in samples) == 5


def test_near_duplicate_margin_scales_with_the_solutions():
    """The released code's 500 characters suit 7B solutions; short ones set their own margin."""
    kept = [
        {"draw": 0, "preferred": True, "dispreferred": False, "blocks": [{"content": "x" * 40}]}
    ]
    close = {"preferred": True, "dispreferred": False, "blocks": [{"content": "y" * 60}]}
    assert near_duplicate_of(close, kept) == 0  # within 500
    assert near_duplicate_of(close, kept, margin=10) is None
    spec = {"min_preferred": 4, "min_dispreferred": 4, "drop_near_duplicates": True}
    assert stop_rule(spec) == (4, 4, 500)
    assert stop_rule(spec | {"near_duplicate_chars": 10}) == (4, 4, 10)
    assert stop_rule(spec | {"drop_near_duplicates": False, "near_duplicate_chars": 10})[2] == 0


def test_step_control_continues_from_split_points_with_rising_temperature(pool):
    chosen = [
        Block("text", "Compute it."),
        Block("code", "print(2)"),
        Block("execution", "2\n"),
        Block("text", "So \\boxed{2}."),
    ]
    schedule = TemperatureSchedule(1.1, 0.1, 1.15)
    settings = step_control_settings(schedule=schedule, max_tries=5, max_pairs=2, seed=1)
    # Wrong only when hot enough: the answer block is the second generated one (1.1 + 0.1, capped).
    backend = ScriptedBackend(wrong_when=lambda r: r.temperature >= 1.15)
    task = StepControlTask(questions(1)[0], chosen, settings)
    run_frontier([task], backend, pool, SETTINGS)
    record = task.record()
    assert record["split_points"] == split_points(chosen) == [0]
    [negative] = record["negatives"]
    assert negative["k"] == 0 and negative["dispreferred"]
    # Generated after the prefix t_0: code, text (execution is the sandbox's), then end.
    assert [b["kind"] for b in negative["blocks"]] == ["code", "execution", "text"]
    assert negative["temperatures"] == [1.1, 1.15]


def test_step_control_gives_up_after_max_tries(pool):
    chosen = [
        Block("text", "a"),
        Block("code", "print(2)"),
        Block("execution", "2\n"),
        Block("text", "\\boxed{2}"),
    ]
    settings = step_control_settings(max_tries=3, max_pairs=2)
    task = StepControlTask(questions(1)[0], chosen, settings)
    backend = ScriptedBackend(wrong_when=lambda r: False)
    run_frontier([task], backend, pool, SETTINGS)
    assert task.record()["negatives"] == [] and task.record()["tries"] == {"0": 3}


def test_shards_partition_in_order():
    items = list(range(10))
    shards = [shard_slice(items, i, 3) for i in range(3)]
    assert sum(shards, []) == items
    assert [len(s) for s in shards] == [4, 3, 3]
    with pytest.raises(ValueError):
        shard_slice(items, 3, 3)


class Crash(RuntimeError):
    pass


def _resumable(tmp_path, backend, pool, name="state.jsonl"):
    settings = sampling_settings(max_samples=8, round_size=2)
    return run_resumable(
        questions(10),
        make_tasks=lambda chunk: [SamplingTask(q, settings) for q in chunk],
        records_of=lambda tasks: [t.record() for t in tasks],
        backend_factory=lambda: backend,
        executor=pool,
        settings=SETTINGS,
        resume_path=tmp_path / name,
        key="config-a",
        chunk_size=3,
        desc="test",
    )


def test_a_crashed_run_resumes_to_the_uninterrupted_result(tmp_path, pool):
    expected, _ = _resumable(tmp_path / "clean", ScriptedBackend(), pool)

    crashing = ScriptedBackend()
    original = crashing.generate

    def generate(requests, max_new_tokens):
        if crashing.calls > 60:
            raise Crash
        return original(requests, max_new_tokens)

    crashing.generate = generate
    with pytest.raises(Crash):
        _resumable(tmp_path, crashing, pool)
    state = (tmp_path / "state.jsonl").read_text().splitlines()
    assert 0 < len(state) < 4  # some chunks were saved before the crash
    # A torn last line, as a SIGKILL mid-write leaves, is ignored.
    with (tmp_path / "state.jsonl").open("a") as handle:
        handle.write('{"fingerprint": "config-a", "chunk": 3, "rec')
    resumed_backend = ScriptedBackend()
    resumed, _ = _resumable(tmp_path, resumed_backend, pool)
    assert resumed == expected
    assert resumed_backend.calls < 150  # the saved chunks were not generated again


def test_a_resume_file_from_another_config_is_ignored(tmp_path, pool):
    (tmp_path / "state.jsonl").write_text(
        json.dumps({"fingerprint": "config-b", "chunk": 0, "records": [{"stale": True}]}) + "\n"
    )
    records, _ = _resumable(tmp_path, ScriptedBackend(), pool)
    assert all("stale" not in r for r in records) and len(records) == 10


def test_the_resume_key_changes_with_the_questions_the_model_and_the_params(tmp_path):
    from scdpo.generation.job import resume_key

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_text("a")
    items, params = questions(3), {"seed": 0}
    key = resume_key(params, str(model), items)
    assert resume_key(params, str(model), questions(3)) == key
    assert resume_key(params, str(model), [*items[:2], {**items[2], "answer": "7"}]) != key
    assert resume_key({"seed": 1}, str(model), items) != key
    (model / "weights").write_text("bb")
    assert resume_key(params, str(model), items) != key
