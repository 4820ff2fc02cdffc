"""Token ids of a prompt as the trainers saw it, for every engine and scorer (no imports: any
tokenizer with the Hugging Face call interface)."""

from __future__ import annotations


def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (BOS for Llama and Mistral). TRL's
    trainers tokenise training examples with them, so generation prompts start with them too."""
    marked = tokenizer("a", add_special_tokens=True).input_ids
    plain = tokenizer("a", add_special_tokens=False).input_ids
    for start in range(len(marked) - len(plain) + 1):
        if marked[start : start + len(plain)] == plain:
            return list(marked[:start])
    return []


def prompt_ids(tokenizer, prompt: str, leading: list[int] | None = None) -> list[int]:
    """A prompt's token ids as training saw them: the leading special tokens (pass them when
    encoding many prompts, they are the same for all), then the text."""
    if leading is None:
        leading = leading_special_ids(tokenizer)
    return leading + tokenizer(prompt, add_special_tokens=False).input_ids
