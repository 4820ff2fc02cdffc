import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from scdpo.results.credit import (
    TokenRewards,
    block_rewards,
    implicit_reward,
    localisation_metrics,
    render_html,
    token_logprobs,
)

MARKERS = ["<|text|>", "<|code|>", "<|execution|>", "<|endofblock|>", "<|endofmessage|>"]
CORPUS = [
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "She has 3 + 5 = 8 apples.\n\nThe answer is \\boxed{8}.",
    "print(3 + 5)\n8\nSo the total is 8 apples.",
]
PROMPT = "<|user|><|text|>Janet has 3 apples and buys 5 more.<|endofblock|><|assistant|>"
COMPLETION = (
    "<|text|>She has 3 + 5 = 8 apples.<|endofblock|><|code|>print(3 + 5)<|endofblock|>"
    "<|execution|>8<|endofblock|><|text|> The answer is \\boxed{8}.<|endofblock|><|endofmessage|>"
)


def _byte_level_bpe(trim_offsets: bool) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    if trim_offsets:  # as GPT-2 style tokenizers ship: offsets exclude the leading space
        bpe.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|user|>", "<|assistant|>", *MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


@pytest.fixture(scope="module")
def tok():
    return _byte_level_bpe(trim_offsets=False)


def _model(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=vocab_size,
        initializer_range=0.2,  # peaked logits, so the two models differ clearly
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def models_(tok):
    return _model(len(tok), seed=0), _model(len(tok), seed=1)


def _direct_logprobs(model, tok, prompt, completion):
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return torch.tensor(
        [logp[t - 1, ids[0, t]].item() for t in range(len(p), len(p) + len(c))], dtype=torch.float64
    )


def test_token_logprobs_match_direct_computation(tok, models_):
    policy, _ = models_
    tokens, lp = token_logprobs(policy, tok, PROMPT, COMPLETION)
    expected = _direct_logprobs(policy, tok, PROMPT, COMPLETION)
    assert len(tokens) == lp.shape[0] == expected.shape[0]
    torch.testing.assert_close(lp.double(), expected, atol=1e-5, rtol=0)
    assert "".join(tokens) == COMPLETION
    assert "<|code|>" in tokens  # markers stay single tokens


def test_implicit_reward_matches_direct_computation(tok, models_):
    policy, reference = models_
    beta = 0.1
    tr = implicit_reward(policy, reference, tok, PROMPT, COMPLETION, beta)
    expected = beta * (
        _direct_logprobs(policy, tok, PROMPT, COMPLETION)
        - _direct_logprobs(reference, tok, PROMPT, COMPLETION)
    )
    torch.testing.assert_close(tr.rewards.double(), expected, atol=1e-5, rtol=0)
    assert tr.rewards.abs().max() > 1e-2  # the check above is not trivially about zeros
    assert [COMPLETION[s:e] for s, e in tr.offsets] == tr.tokens
    assert tr.offsets[0][0] == 0 and tr.offsets[-1][1] == len(COMPLETION)


def test_same_model_gives_zero_rewards(tok, models_):
    policy, _ = models_
    tr = implicit_reward(policy, policy, tok, PROMPT, COMPLETION, beta=0.5)
    assert torch.count_nonzero(tr.rewards) == 0


@pytest.mark.parametrize("trim_offsets", [False, True])
def test_tokens_are_the_text_of_each_token_byte_level(trim_offsets):
    tok = _byte_level_bpe(trim_offsets)
    ids = tok(COMPLETION, add_special_tokens=False)["input_ids"]
    tokens, _ = token_logprobs(_model(len(tok), seed=0), tok, PROMPT, COMPLETION)
    assert tokens == [tok.decode([i]) for i in ids]  # ASCII: single-token decode is exact
    assert " apples" in tokens and " is" in tokens


def test_tokens_metaspace_prefix_gets_empty_tile():
    sp = Tokenizer(models.BPE())
    sp.pre_tokenizer = pre_tokenizers.Metaspace()  # prepends "▁" like SentencePiece
    sp.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=sp)
    text = "Janet has 8 apples."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tokens, _ = token_logprobs(_model(len(tok), seed=0), tok, "Q", text)
    expected = [p.replace("▁", " ") for p in tok.convert_ids_to_tokens(ids)]
    expected[0] = expected[0][1:]  # the prepended space is not in the text
    assert tokens == expected and "".join(tokens) == text


def test_empty_prompt_is_rejected(tok, models_):
    with pytest.raises(ValueError, match="prompt"):
        token_logprobs(models_[0], tok, "", COMPLETION)


def _hand_made() -> TokenRewards:
    # completion "ab cd\n\nef": tokens "ab", " cd", "\n\n", "ef", and an empty byte piece
    tokens = ["ab", " cd", "\n\n", "ef", ""]
    offsets = [(0, 2), (2, 5), (5, 7), (7, 9), (9, 9)]
    return TokenRewards(tokens, torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]), offsets)


def test_block_rewards_on_hand_made_spans():
    tr = _hand_made()
    assert block_rewards(tr, [(0, 5), (7, 9)]) == [3.0, 24.0]  # gap token "\n\n" in no block
    assert block_rewards(tr, [(0, 2), (2, 7), (7, 9), (9, 9)]) == [1.0, 6.0, 24.0, 0.0]
    assert block_rewards(tr, [(3, 5)]) == [2.0]  # " cd" belongs where its last char is
    with pytest.raises(ValueError):
        block_rewards(tr, [(5, 2)])


def test_token_rewards_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        TokenRewards(["a"], torch.tensor([1.0, 2.0]), [(0, 1)])


def test_localisation_perfect_reversed_and_tied():
    perfect = [([0.5, -2.0, 0.1], 1), ([-1.0, 0.3], 0)]
    m = localisation_metrics(perfect)
    assert (m["auc"], m["top1"], m["n_items"], m["n_blocks"]) == (1.0, 1.0, 2, 5)
    assert m["top1_chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    m = localisation_metrics([([0.5, 2.0, 0.1], 1), ([1.0, 0.3], 0)])
    assert (m["auc"], m["top1"]) == (0.0, 0.0)
    m = localisation_metrics([([0.0, 0.0, 0.0], 2), ([0.0, 0.0], 0)])
    assert m["auc"] == 0.5
    assert m["top1"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_localisation_known_intermediate_auc():
    # positives (minus reward): 2, 0; negatives: 1, 3, 0 -> pairs won: (2>1)+(2>0)+0.5*(0=0) = 2.5
    m = localisation_metrics([([-2.0, -1.0, -3.0], 0), ([0.0, 0.0], 0)])
    assert m["auc"] == pytest.approx(2.5 / 6)


def test_localisation_edge_cases():
    m = localisation_metrics([])
    assert m["n_items"] == 0 and math.isnan(m["auc"]) and math.isnan(m["top1"])
    assert math.isnan(localisation_metrics([([1.0], 0)])["auc"])  # no negatives
    with pytest.raises(ValueError):
        localisation_metrics([([1.0, 2.0], 2)])


def test_render_html_escapes_and_shares_scale():
    tr = TokenRewards(
        ["<|code|>", 'a<b & "c"', "\n"], torch.tensor([-2.0, 1.0, 0.0]), [(0, 8), (8, 17), (17, 18)]
    )
    other = TokenRewards(["x"], torch.tensor([0.5]), [(0, 1)])
    page = render_html([("DPO", tr), ("SC<DPO>", other)], title="Q1 <solution>")
    assert "<|code|>" not in page and "&lt;|code|&gt;" in page
    assert "a&lt;b &amp; &quot;c&quot;" in page
    assert "SC&lt;DPO&gt;" in page and "Q1 &lt;solution&gt;" in page
    assert 'title="-2"' in page and 'title="+1"' in page
    # the shared scale is 2: -2 is full red, +0.5 a quarter of the way to green
    assert "rgb(214,39,40)" in page and "rgb(202,231,202)" in page
    assert "rgb(255,255,255)" in page  # zero is white
    assert "http" not in page and "<link" not in page and "<script" not in page
