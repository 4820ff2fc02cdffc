from scdpo.pairs import (
    data_equal_pairs,
    fit_lengths,
    mix,
    naive_pairs,
    split_eval,
    step_controlled_pairs,
    step_level_pairs,
)
from scdpo.solution import END_OF_BLOCK, END_OF_MESSAGE


def sample(answer: str, preferred: bool) -> dict:
    blocks = [{"kind": "text", "content": f"\\boxed{{{answer}}}"}]
    return {"blocks": blocks, "preferred": preferred, "dispreferred": not preferred}


def sampled(n_questions: int, n_good: int, n_bad: int) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "question": f"Q{i}",
            "answer": "1",
            "samples": [sample("1", True) for _ in range(n_good)]
            + [sample(str(j + 2), False) for j in range(n_bad)],
        }
        for i in range(n_questions)
    ]


def test_naive_pairs_take_the_first_preferred_and_dispreferred():
    data = sampled(3, 2, 2) + [
        {"id": "only-good", "question": "Q", "answer": "1", "samples": [sample("1", True)]}
    ]
    pairs = naive_pairs(data, "sys")
    assert [p["id"] for p in pairs] == ["q0", "q1", "q2"]
    assert pairs[0]["chosen"].startswith("<|text|>\\boxed{1}")
    assert pairs[0]["rejected"].startswith("<|text|>\\boxed{2}")
    assert pairs[0]["prompt"].endswith("<|assistant|>")


def test_data_equal_expands_to_the_target_across_questions():
    data = sampled(4, 2, 3)  # 6 combinations per question
    pairs = data_equal_pairs(data, "", target=10, seed=0)
    assert len(pairs) == 10
    ids = [p["id"] for p in pairs[4:]]
    assert len(set(ids)) == 4  # extras spread round-robin over the questions
    assert len({(p["id"], p["chosen"], p["rejected"]) for p in pairs}) >= 7
    assert len(data_equal_pairs(data, "", target=1000, seed=0)) == 24  # all combinations


def test_step_controlled_pairs_share_the_prefix_and_end_it_on_a_block_marker():
    chosen = [
        {"kind": "text", "content": "a"},
        {"kind": "code", "content": "print(1)"},
        {"kind": "execution", "content": "1\n"},
        {"kind": "text", "content": "\\boxed{1}"},
    ]
    generated = [
        {
            "id": "q",
            "question": "Q",
            "answer": "1",
            "chosen": chosen,
            "negatives": [
                {
                    "k": 0,
                    "temperatures": [1.1, 1.15],
                    "blocks": [
                        {"kind": "code", "content": "print(2)"},
                        {"kind": "execution", "content": "2\n"},
                        {"kind": "text", "content": "\\boxed{2}"},
                    ],
                }
            ],
        }
    ]
    [pair] = step_controlled_pairs(generated, "")
    assert pair["prompt"].endswith("<|text|>a" + END_OF_BLOCK)
    assert pair["chosen"].startswith("<|code|>print(1)")
    assert pair["rejected"].startswith("<|code|>print(2)")
    assert pair["chosen"].endswith(END_OF_MESSAGE) and pair["rejected"].endswith(END_OF_MESSAGE)
    assert pair["k"] == 0 and pair["temperatures"] == [1.1, 1.15]


def _generated(negatives: list[list[dict]]) -> list[dict]:
    chosen = [
        {"kind": "text", "content": "a"},
        {"kind": "code", "content": "print(1)"},
        {"kind": "execution", "content": "1\n"},
        {"kind": "text", "content": "\\boxed{1}"},
    ]
    return [
        {
            "id": "q",
            "question": "Q",
            "answer": "1",
            "chosen": chosen,
            "negatives": [
                {"k": k, "temperatures": [1.1, 1.15], "blocks": blocks} for k, blocks in negatives
            ],
        }
    ]


def test_step_level_pairs_take_one_step_each_after_the_shared_prefix():
    """Step-DPO on the same generations: the SC pair's prompt, then a code step with its output
    (not the rest of the solution), or the final text step with the end of the message."""
    wrong_code = [
        {"kind": "code", "content": "print(2)"},
        {"kind": "execution", "content": "2\n"},
        {"kind": "text", "content": "\\boxed{2}"},
    ]
    wrong_end = [{"kind": "text", "content": "\\boxed{3}"}]
    generated = _generated([(0, wrong_code), (2, wrong_end)])
    code_step, last_step = step_level_pairs(generated, "")
    [sc_pair, _] = step_controlled_pairs(generated, "")
    assert code_step["prompt"] == sc_pair["prompt"] and code_step["kind"] == "step_level"
    assert (
        code_step["chosen"] == "<|code|>print(1)" + END_OF_BLOCK + "<|execution|>1\n" + END_OF_BLOCK
    )
    assert (
        code_step["rejected"]
        == "<|code|>print(2)" + END_OF_BLOCK + "<|execution|>2\n" + END_OF_BLOCK
    )
    assert code_step["temperatures"] == [1.1]  # the one model call of the step
    assert last_step["k"] == 2 and last_step["prompt"].endswith("<|execution|>1\n" + END_OF_BLOCK)
    assert last_step["chosen"] == "<|text|>\\boxed{1}" + END_OF_BLOCK + END_OF_MESSAGE
    assert last_step["rejected"] == "<|text|>\\boxed{3}" + END_OF_BLOCK + END_OF_MESSAGE


def test_step_level_pairs_leave_out_a_step_the_continuation_repeated():
    """The error came later: the first new step equals the correct one, so no step-level pair."""
    same_first = [
        {"kind": "code", "content": "print(1)"},
        {"kind": "execution", "content": "1\n"},
        {"kind": "text", "content": "\\boxed{7}"},
    ]
    assert step_level_pairs(_generated([(0, same_first)]), "") == []
    assert len(step_controlled_pairs(_generated([(0, same_first)]), "")) == 1


def test_mix_and_eval_split_keep_every_pair_once():
    a = [{"id": f"a{i}", "kind": "naive"} for i in range(150)]
    b = [{"id": f"b{i}", "kind": "step_controlled"} for i in range(50)]
    mixed = mix(a, b, seed=3)
    assert sorted(p["id"] for p in mixed) == sorted(p["id"] for p in a + b)
    assert mixed != a + b
    train, held = split_eval(mixed, 0.01, seed=0)
    assert len(held) == 2 and len(train) == 198
    assert not {p["id"] for p in train} & {p["id"] for p in held}


class Words:
    """A tokenizer of whitespace-separated words."""

    leading = 0

    def encode(self, text: str) -> list[str]:
        return text.split()

    def decode(self, ids: list[str]) -> str:
        return " ".join(ids)


LONG_PAIRS = [
    {"prompt": "p " * 3, "chosen": "c " * 2, "rejected": "r " * 4},  # 3 + 4 = 7: fits
    {"prompt": "p " * 3, "chosen": "c " * 2, "rejected": "r " * 6},  # 9 > 8: cut suffix
    {"prompt": "p " * 8, "chosen": "c", "rejected": "r"},  # prompt alone fills it
]


def test_the_drop_policy_drops_what_trl_would_truncate_and_counts_it():
    spec = {"max_length": 8, "max_prompt_length": 4, "over_length": "drop"}
    kept, report = fit_lengths(LONG_PAIRS, Words(), spec)
    assert kept == LONG_PAIRS[:1]
    assert report["pair_exceeds_max_length"] == 1
    assert report["prompt_reaches_max_length"] == 1
    assert report["pairs_kept"] == 1 and report["completions_truncated"] == 0


def test_the_trainers_bos_counts_against_max_length():
    class WordsWithBos(Words):
        leading = 1

    spec = {"max_length": 8, "max_prompt_length": 4, "over_length": "drop"}
    kept, report = fit_lengths(LONG_PAIRS[:1], WordsWithBos(), {**spec, "max_length": 7})
    assert kept == [] and report["pair_exceeds_max_length"] == 1  # 1 + 3 + 4 > 7
    assert fit_lengths(LONG_PAIRS[:1], WordsWithBos(), spec)[0] == LONG_PAIRS[:1]


def test_the_truncate_policy_cuts_like_the_original_and_counts_it():
    spec = {"max_length": 8, "max_prompt_length": 4, "over_length": "truncate"}
    kept, report = fit_lengths(LONG_PAIRS, Words(), spec)
    assert len(kept) == 3 and kept[0] == LONG_PAIRS[0]
    # The rejected suffix keeps its start: 3 prompt + 5 completion tokens.
    assert kept[1]["rejected"] == "r r r r r" and kept[1]["chosen"] == "c c"
    # A long prompt keeps its end (max_prompt_length 4), then the completions fit.
    assert kept[2]["prompt"] == "p p p p" and kept[2]["chosen"] == "c"
    assert report["prompt_truncated"] == 1 and report["completions_truncated"] == 1
    assert report["pairs_kept"] == 3
