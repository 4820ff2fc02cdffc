from scdpo.solution import (
    END_OF_BLOCK,
    END_OF_MESSAGE,
    Block,
    cot_blocks,
    is_noisy,
    mentions_error,
    parse_generated_block,
    render_prompt,
    render_solution,
    split_points,
)


def blocks(kinds: str) -> list[Block]:
    names = {"t": "text", "c": "code", "e": "execution"}
    return [Block(names[k], f"{names[k]} {i}") for i, k in enumerate(kinds)]


def test_prompt_and_solution_use_the_method_markers():
    prompt = render_prompt("What is 1+1?", "Be brief.")
    assert prompt == (
        "<|system|><|text|>Be brief.<|endofblock|><|endofmessage|>"
        "<|user|><|text|>What is 1+1?<|endofblock|><|endofmessage|><|assistant|>"
    )
    text = render_solution([Block("text", "a"), Block("code", "print(2)"), Block("execution", "2")])
    assert text == (
        "<|text|>a<|endofblock|><|code|>print(2)<|endofblock|><|execution|>2<|endofblock|>"
        + END_OF_MESSAGE
    )


def test_generated_block_kind_comes_from_its_opening_marker():
    assert parse_generated_block("<|code|>x = 1") == Block("code", "x = 1")
    assert parse_generated_block("<|text|>so") == Block("text", "so")
    # No marker: kept as text (and later filtered as noisy if it holds markers).
    assert parse_generated_block("stray") == Block("text", "stray")


def test_split_points_follow_text_or_execution_and_stop_at_third_from_last():
    # t c e t c e t : indices 0..6, third-from-last is 4
    assert split_points(blocks("tcetcet")) == [0, 2, 3]
    # never right after a code block
    assert all(blocks("tcetcet")[k].kind != "code" for k in split_points(blocks("tcetcet")))
    assert split_points(blocks("tcet")) == [0]
    assert split_points(blocks("tt")) == []


def test_noisy_samples():
    assert not is_noisy(blocks("tcet"))
    assert is_noisy(blocks("t" * 25))
    assert is_noisy([Block("text", "x" * 3001)])
    assert is_noisy([Block("text", f"a {END_OF_BLOCK} b")])


def test_error_mentions_are_not_preferred_material():
    assert mentions_error([Block("execution", "Traceback (most recent call last):")])
    assert mentions_error([Block("text", "Sorry, I made a mistake")])
    assert mentions_error([Block("execution", "NameError: name 'x' is not defined")])
    assert not mentions_error(blocks("tcet"))


def test_cot_steps_split_on_blank_lines():
    assert cot_blocks("First.\n\nSecond.\n  \nThird \\boxed{3}") == [
        Block("text", "First."),
        Block("text", "Second."),
        Block("text", "Third \\boxed{3}"),
    ]
