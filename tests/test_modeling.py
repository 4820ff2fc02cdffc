import pytest
import torch

from scdpo.modeling import add_marker_tokens, build_base_model, create_tiny_llama, train_tokenizer
from scdpo.problems import synthetic_problems
from scdpo.solution import END_OF_MESSAGE, MARKERS, Block, render_prompt, render_solution

SPEC = {
    "source": "scratch",
    "vocab_size": 400,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 1,
    "num_heads": 2,
    "max_position_embeddings": 256,
    "seed": 0,
}


def corpus(n=200):
    for p in synthetic_problems(n, seed=0):
        yield render_prompt(p["question"], "Go.") + render_solution(
            [Block.from_json(b) for b in p["blocks"]]
        )


def test_tokenizer_keeps_markers_whole_splits_digits_and_round_trips():
    tokenizer = train_tokenizer(corpus(), vocab_size=400)
    text = next(corpus())
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer("x = 123", add_special_tokens=False).input_ids
    )
    assert {"1", "2", "3"} <= set(tokens)
    for marker in MARKERS:
        assert tokenizer.convert_ids_to_tokens(tokenizer(marker).input_ids) == [marker]
    assert tokenizer.eos_token == END_OF_MESSAGE


def test_markers_added_to_a_real_model_get_mean_embeddings(tmp_path):
    """A 'real' base model saved without markers (as a hub model is) gains them on load."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, "a": 2, "b": 3, "c": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")
    model = create_tiny_llama(tokenizer, SPEC, seed=1)
    model.config.tie_word_embeddings = False
    old = model.get_input_embeddings().weight.detach().clone()
    added = add_marker_tokens(model, tokenizer)
    assert added == len(MARKERS)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(tokenizer) == len(vocab) + len(MARKERS) + 1  # + pad
    torch.testing.assert_close(weight[: len(vocab)], old)
    for row in weight[len(vocab) :]:
        torch.testing.assert_close(row, old.mean(dim=0))
    assert tokenizer.eos_token == END_OF_MESSAGE
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids(END_OF_MESSAGE)


def test_scratch_base_model_is_saved_and_loadable(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    facts = build_base_model(SPEC, corpus(), tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert facts["vocab_size"] == len(tokenizer)
    assert model.config.model_type == "llama"
    assert tokenizer.eos_token == END_OF_MESSAGE


def test_real_model_source_loads_from_a_local_path(tmp_path):
    """source: hf with a local directory exercises the same loading code as a hub id."""
    from transformers import AutoTokenizer

    from scdpo.modeling import load_pretrained, save

    tokenizer = train_tokenizer(corpus(50), vocab_size=300)
    model = create_tiny_llama(tokenizer, SPEC, seed=0)
    save(model, tokenizer, tmp_path / "hub-like")
    build_base_model(
        {
            "source": "hf",
            "name_or_path": str(tmp_path / "hub-like"),
            "dtype": "auto",
            "trust_remote_code": False,
        },
        [],
        tmp_path / "b",
    )
    assert AutoTokenizer.from_pretrained(tmp_path / "b").eos_token == END_OF_MESSAGE
    with pytest.raises(OSError):
        load_pretrained(str(tmp_path / "missing"))


def test_a_saved_model_with_its_own_code_is_loaded_trusting_it(tmp_path):
    from scdpo.modeling import has_remote_code

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "config.json").write_text(
        '{"auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}}'
    )
    assert not has_remote_code(tmp_path / "plain") and has_remote_code(tmp_path / "remote")
    assert not has_remote_code(tmp_path / "missing")


def test_generation_prompts_are_a_prefix_of_the_training_ids_bos_included():
    """TRL tokenises training examples with the tokenizer's special tokens (BOS for Mistral):
    the engines' prompt ids must be the start of the same example's training ids."""
    from tokenizers.processors import TemplateProcessing

    from scdpo.generation.encoding import PieceEncoder
    from scdpo.tokens import leading_special_ids, prompt_ids

    tokenizer = train_tokenizer(corpus(50), vocab_size=300)
    assert leading_special_ids(tokenizer) == []  # the scratch tokenizer adds none
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    problem = synthetic_problems(1, seed=3)[0]
    prompt = render_prompt(problem["question"], "Solve.")
    completion = render_solution([Block.from_json(b) for b in problem["blocks"]])
    training = tokenizer(prompt + completion).input_ids  # what TRL's trainers see
    ids = prompt_ids(tokenizer, prompt)
    assert ids[0] == bos and training[: len(ids)] == ids
    assert PieceEncoder(tokenizer).encode(prompt) == ids
