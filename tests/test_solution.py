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


# --- MetaMathQA's steps: one per line ----------------------------------------------------------
# Rows written here in the shape of meta-math/MetaMathQA's `response` column: steps on single lines,
# GSM8K-derived rows keeping `#### N`, every row ending on `The answer is: N`.

GSM_SHAPED = (
    "Each crate holds 12 jars, so 5 crates hold 5 * 12 = 60 jars.\n"
    "The shop sells 18 jars on Monday, leaving 60 - 18 = 42 jars.\n"
    "On Tuesday it receives 3 more crates, which is 3 * 12 = 36 jars.\n"
    "So it has 42 + 36 = 78 jars at the end.\n"
    "#### 78\n"
    "The answer is: 78"
)
MATH_SHAPED_DOLLARS = (
    "We complete the square in $x$.\n"
    "The expression becomes\n"
    "$$\n"
    "(x-3)^2 + 4.\n"
    "$$\n"
    "Since a square is never negative, the least value is reached at $x = 3$.\n"
    "Therefore, the minimum value is $\\boxed{4}$.\n"
    "The answer is: 4"
)
MATH_SHAPED_BRACKETS = (
    "Let the two numbers be $a$ and $b$, with $a + b = 10$ and $ab = 21$.\n"
    "Then\n"
    "\\[\n"
    "a^2 + b^2 = (a + b)^2 - 2ab\n"
    "= 100 - 42.\n"
    "\\]\n"
    "Expanding step by step,\n"
    "\\begin{align*}\n"
    "a^2 + b^2 &= 100 - 42 \\\\[2pt]\n"
    "&= 58.\n"
    "\\end{align*}\n"
    "So the sum of the squares is $\\boxed{58}$.\n"
    "The answer is: 58"
)
FOBAR_SHAPED = (
    "We want to find the value of $X$ in the given situation.\n"
    "Tina buys $X$ pens at $2 each and spends $2X$ dollars.\n"
    "We are given that she spends 14 dollars, so $2X = 14$.\n"
    "Dividing both sides by 2, we find $X = 7$.\n"
    "\n"
    "The value of $X$ is 7.\n"
    "The answer is: 7"
)


def _texts(solution: str) -> list[str]:
    blocks = cot_blocks(solution)
    assert all(b.kind == "text" for b in blocks)
    return [b.content for b in blocks]


def test_metamath_gsm_rows_split_per_line_answer_lines_with_the_last_step():
    steps = _texts(GSM_SHAPED)
    assert steps == [
        "Each crate holds 12 jars, so 5 crates hold 5 * 12 = 60 jars.",
        "The shop sells 18 jars on Monday, leaving 60 - 18 = 42 jars.",
        "On Tuesday it receives 3 more crates, which is 3 * 12 = 36 jars.",
        "So it has 42 + 36 = 78 jars at the end.\n#### 78\nThe answer is: 78",
    ]
    # The method's split points: after each of the first two steps (up to the third-from-last).
    assert split_points(cot_blocks(GSM_SHAPED)) == [0, 1]


def test_display_math_is_never_split_and_stays_with_the_line_that_introduces_it():
    assert _texts(MATH_SHAPED_DOLLARS) == [
        "We complete the square in $x$.",
        "The expression becomes\n$$\n(x-3)^2 + 4.\n$$",
        "Since a square is never negative, the least value is reached at $x = 3$.",
        "Therefore, the minimum value is $\\boxed{4}$.\nThe answer is: 4",
    ]
    steps = _texts(MATH_SHAPED_BRACKETS)
    assert steps[1] == "Then\n\\[\na^2 + b^2 = (a + b)^2 - 2ab\n= 100 - 42.\n\\]"
    # `\\[2pt]` inside the align is a line break, not a display opening.
    assert steps[2] == (
        "Expanding step by step,\n\\begin{align*}\na^2 + b^2 &= 100 - 42 \\\\[2pt]\n&= 58.\n"
        "\\end{align*}"
    )
    assert steps[3].endswith("The answer is: 58") and len(steps) == 4
    for solution in (MATH_SHAPED_DOLLARS, MATH_SHAPED_BRACKETS):
        for step in _texts(solution):
            assert step.count("$$") % 2 == 0
            assert step.count("\\[") - step.count("\\\\[") == step.count("\\]")


def test_a_metamath_row_with_a_stray_blank_line_still_splits_per_line():
    steps = _texts(FOBAR_SHAPED)
    assert len(steps) == 5 and steps[-1] == "The value of $X$ is 7.\nThe answer is: 7"
    assert len(split_points(cot_blocks(FOBAR_SHAPED))) == 3


def test_other_cot_solutions_keep_their_paragraphs():
    # Blank-line paragraphs (with lines inside) stay whole, answer paragraph included.
    text = "Add 3.\n3 + 4 = 7.\n\nDouble it: 14.\n\nThe answer is \\boxed{14}."
    assert _texts(text) == ["Add 3.\n3 + 4 = 7.", "Double it: 14.", "The answer is \\boxed{14}."]
    # GSM8K's own answers (no blank lines) are lines too, `#### N` with the last one.
    assert _texts("4 * 3 = <<4*3=12>>12 apples.\n12 - 5 = <<12-5=7>>7 left.\n#### 7") == [
        "4 * 3 = <<4*3=12>>12 apples.",
        "12 - 5 = <<12-5=7>>7 left.\n#### 7",
    ]
    assert _texts("") == [] and _texts("The answer is: 3") == ["The answer is: 3"]
