"""InternLM2 -> Llama (scdpo.convert, scdpo.spm): a tiny checkpoint in InternLM2's real layout
(parameter names and shapes, config keys, a SentencePiece tokenizer.model) gives the same logits
as a forward pass written here from InternLM2's architecture, and the same token ids as
SentencePiece's BPE algorithm written here from its description."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from spm_writer import model_proto

from scdpo.convert import convert_checkpoint, is_internlm2, llama_config, split_wqkv
from scdpo.spm import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, fast_tokenizer, read_model

# --- a tiny InternLM2 checkpoint ------------------------------------------------------------------


def internlm2_config(bias: bool, rope_scaling: dict | None, vocab: int = 40) -> dict:
    """config.json keys as InternLM2's release writes them."""
    return {
        "architectures": ["InternLM2ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
        },
        "model_type": "internlm2",
        "attn_implementation": "eager",
        "bias": bias,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 16,
        "initializer_range": 0.02,
        "intermediate_size": 24,
        "max_position_embeddings": 8,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-05,
        "rope_scaling": rope_scaling,
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.41.0",
        "use_cache": True,
        "vocab_size": vocab,
    }


def internlm2_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under InternLM2's parameter names and shapes."""
    g = torch.Generator().manual_seed(seed)
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads

    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    w = {
        "model.tok_embeddings.weight": rand(config["vocab_size"], h, scale=1.0),
        "model.norm.weight": 1 + rand(h, scale=0.1),
        "output.weight": rand(config["vocab_size"], h),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w[f"{p}.attention.wqkv.weight"] = rand((heads + 2 * kv) * d, h)
        w[f"{p}.attention.wo.weight"] = rand(h, heads * d)
        if config["bias"]:
            w[f"{p}.attention.wqkv.bias"] = rand((heads + 2 * kv) * d)
            w[f"{p}.attention.wo.bias"] = rand(h)
        w[f"{p}.feed_forward.w1.weight"] = rand(inter, h)
        w[f"{p}.feed_forward.w3.weight"] = rand(inter, h)
        w[f"{p}.feed_forward.w2.weight"] = rand(h, inter)
        w[f"{p}.attention_norm.weight"] = 1 + rand(h, scale=0.1)
        w[f"{p}.ffn_norm.weight"] = 1 + rand(h, scale=0.1)
    return w


def write_checkpoint(folder, config: dict, weights: dict, fmt: str, shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(weights)
    ext = "safetensors" if fmt == "safetensors" else "bin"
    prefix = "model" if fmt == "safetensors" else "pytorch_model"
    weight_map = {}
    for s in range(shards):
        part = {n: weights[n].contiguous() for n in names[s::shards]}
        file = f"{prefix}-{s + 1:05d}-of-{shards:05d}.{ext}" if shards > 1 else f"{prefix}.{ext}"
        if fmt == "safetensors":
            save_file(part, str(folder / file))
        else:
            torch.save(part, folder / file)
        weight_map |= {n: file for n in part}
    if shards > 1:
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / f"{prefix}.{ext}.index.json").write_text(json.dumps(index))


# --- InternLM2's forward pass, from its architecture -------------------------------------------


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_base(config: dict, seq_len: int, d: int) -> float:
    """InternLM2's dynamic NTK: the base grows once the sequence exceeds the trained length."""
    base, scaling = config["rope_theta"], config["rope_scaling"]
    if scaling and scaling["type"] == "dynamic" and seq_len > config["max_position_embeddings"]:
        f, m = scaling["factor"], config["max_position_embeddings"]
        base = base * ((f * seq_len / m) - (f - 1)) ** (d / (d - 2))
    return base


def internlm2_forward(config: dict, w: dict, ids: torch.Tensor) -> torch.Tensor:
    """Logits of InternLM2ForCausalLM for one sequence (fused wqkv: per key/value head, its query
    heads, then its key and its value head), written from the architecture."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    kv, eps, n = config["num_key_value_heads"], config["rms_norm_eps"], ids.shape[0]
    d, groups = h // heads, heads // kv
    inv_freq = 1.0 / rope_base(config, n, d) ** (torch.arange(0, d, 2).float() / d)
    positions = torch.arange(n).float()
    if (config["rope_scaling"] or {}).get("type") == "linear":  # positions divided by the factor
        positions = positions / config["rope_scaling"]["factor"]
    angles = torch.outer(positions, inv_freq)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    mask = torch.full((n, n), float("-inf")).triu(1)
    x = w["model.tok_embeddings.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        y = rms_norm(x, w[f"{p}.attention_norm.weight"], eps)
        qkv = y @ w[f"{p}.attention.wqkv.weight"].T
        if config["bias"]:
            qkv = qkv + w[f"{p}.attention.wqkv.bias"]
        qkv = qkv.view(n, kv, groups + 2, d)
        q = qkv[:, :, :groups].reshape(n, heads, d)  # query head j belongs to kv head j // groups
        k, v = qkv[:, :, groups], qkv[:, :, groups + 1]
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + rotate_half(k) * sin[:, None]
        out = torch.empty(n, heads, d)
        for j in range(heads):
            scores = q[:, j] @ k[:, j // groups].T / math.sqrt(d) + mask
            out[:, j] = scores.softmax(-1) @ v[:, j // groups]
        a = out.reshape(n, h) @ w[f"{p}.attention.wo.weight"].T
        if config["bias"]:
            a = a + w[f"{p}.attention.wo.bias"]
        x = x + a
        y = rms_norm(x, w[f"{p}.ffn_norm.weight"], eps)
        gate, up = y @ w[f"{p}.feed_forward.w1.weight"].T, y @ w[f"{p}.feed_forward.w3.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[f"{p}.feed_forward.w2.weight"].T
    return rms_norm(x, w["model.norm.weight"], eps) @ w["output.weight"].T


DYNAMIC, LINEAR = {"type": "dynamic", "factor": 2.0}, {"type": "linear", "factor": 2.0}
CASES = {  # bias, rope_scaling, weights format, shards, sequence length (trained length 8)
    "safetensors shards, no bias, no rope scaling": (False, None, "safetensors", 2, 7),
    "bin, bias, dynamic NTK past the trained length": (True, DYNAMIC, "bin", 1, 12),
    "safetensors, linear rope scaling": (False, LINEAR, "safetensors", 1, 6),
}


@pytest.mark.parametrize("case", CASES)
def test_converted_llama_keeps_internlm2s_logits(case, tmp_path):
    from transformers import LlamaForCausalLM

    bias, scaling, fmt, shards, length = CASES[case]
    config = internlm2_config(bias, scaling)
    weights = internlm2_weights(config)
    source = tmp_path / "internlm2"
    write_checkpoint(source, config, weights, fmt, shards)
    assert is_internlm2(source)
    convert_checkpoint(source, tmp_path / "llama")
    model = LlamaForCausalLM.from_pretrained(
        tmp_path / "llama", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert model.config.num_key_value_heads == 2 and model.config.attention_bias == bias
    ids = torch.randint(config["vocab_size"], (length,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids[None]).logits[0]
    expected = internlm2_forward(config, weights, ids)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_wqkv_is_split_by_key_value_groups():
    # 2 kv heads, 2 query heads each, head_dim 1: rows q0 q1 k0 v0 | q2 q3 k1 v1
    fused = torch.tensor([[0.0], [1], [10], [20], [2], [3], [11], [21]])
    q, k, v = split_wqkv(fused, kv_heads=2, q_per_kv=2, head_dim=1)
    assert q.flatten().tolist() == [0, 1, 2, 3]
    assert k.flatten().tolist() == [10, 11] and v.flatten().tolist() == [20, 21]


def test_config_keys_map_to_llamas():
    config = llama_config(internlm2_config(True, DYNAMIC))
    assert config["attention_bias"] is True and config["head_dim"] == 4
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000}
    assert config["rope_parameters"] == rope
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert not {"auto_map", "bias", "model_type", "rope_scaling"} & config.keys()


# --- SentencePiece: a tokenizer.model written here, read back, and its ids ---------------------


SPACE = "\u2581"
NORMAL_PIECES = [
    SPACE, "a", "b", "d", "e", "h", "l", "o", "r", "w", "1", "2",
    "he", "ll", "llo", SPACE + "h", SPACE + "he", SPACE + "hello", SPACE + "w", "or",
    SPACE + "wor", SPACE + "world", "ld", SPACE + "1", "12", SPACE * 2, "el", "lo",
]  # fmt: skip
USER = ["<|text|>"]


def sentencepiece_model(add_dummy_prefix: bool = True) -> tuple[bytes, list[tuple[str, int]]]:
    """A BPE ModelProto like InternLM2's: <unk> <s> </s>, 256 byte pieces, normal pieces scored
    by merge order, a user-defined piece; byte fallback on."""
    pieces = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
    pieces += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    pieces += [(p, -float(i), NORMAL) for i, p in enumerate(NORMAL_PIECES)]
    pieces += [(p, 0.0, USER_DEFINED) for p in USER]
    return model_proto(pieces, add_dummy_prefix), [(p, t) for p, _, t in pieces]


def spm_bpe_ids(text: str, pieces: list[tuple[str, int]], added: dict[str, int], prefix=True):
    """SentencePiece's BPE encoding (bpe_model.cc), from its description: the text cut at added
    and user-defined tokens; each other piece normalised (a leading ▁, spaces as ▁), split into
    characters, then the adjacent pair whose concatenation is a normal piece with the highest
    score merged, leftmost first, until none is; a symbol that is no piece falls back to its
    UTF-8 bytes. BOS in front."""
    ids = {p: i for i, (p, _) in enumerate(pieces)}
    score = {p: -i for i, (p, t) in enumerate(pieces) if t == NORMAL}  # earlier: higher
    whole = {**{p: ids[p] for p, t in pieces if t == USER_DEFINED}, **added}
    out, chunk = [1], ""

    def flush(chunk):
        if not chunk:
            return []
        symbols = list((SPACE if prefix else "") + chunk.replace(" ", SPACE))
        while True:
            pairs = enumerate(zip(symbols, symbols[1:], strict=False))
            best = max(((score[a + b], -i) for i, (a, b) in pairs if a + b in score), default=None)
            if best is None:
                break
            i = -best[1]
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        result = []
        for s in symbols:
            result += [ids[s]] if s in ids else [ids[f"<0x{b:02X}>"] for b in s.encode()]
        return result

    i = 0
    while i < len(text):
        match = next((t for t in whole if text.startswith(t, i)), None)
        if match:
            out += flush(chunk) + [whole[match]]
            chunk, i = "", i + len(match)
        else:
            chunk, i = chunk + text[i], i + 1
    return out + flush(chunk)


TEXTS = [
    "hello world",
    "hello  world 12",
    "héllo",  # é is no piece: its two UTF-8 bytes
    "a\nb",
    "<|text|>hello<|im_start|>world",
    " leading space",
    "",
]


@pytest.mark.parametrize("prefix", [True, False])
def test_tokenizer_model_gives_sentencepieces_ids(prefix, tmp_path):
    data, pieces = sentencepiece_model(prefix)
    read = read_model(data)
    assert read.model_type == 2 and read.byte_fallback and read.pad_id == -1
    assert [p.piece for p in read.pieces] == [p for p, _ in pieces]
    assert read.add_dummy_prefix is prefix and not read.remove_extra_whitespaces
    (tmp_path / "tokenizer.model").write_bytes(data)
    im_start = len(pieces)  # an added special token past the model's pieces, as chat models have
    added = {
        "0": {"content": "<unk>", "special": True},
        "1": {"content": "<s>", "special": True},
        "2": {"content": "</s>", "special": True},
    }
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
                "tokenizer_class": "InternLM2Tokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "</s>",
                "unk_token": "<unk>",
                "added_tokens_decoder": added,
            }
        )
    )
    tokenizer, notes = fast_tokenizer(tmp_path)
    assert notes == []
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == im_start
    for text in TEXTS:
        expected = spm_bpe_ids(text, pieces, {"<|im_start|>": im_start}, prefix)
        assert tokenizer(text).input_ids == expected, text
    assert tokenizer.decode(tokenizer("hello  world 12").input_ids, skip_special_tokens=True) == (
        "hello  world 12"
    )
    assert tokenizer.decode(tokenizer("héllo").input_ids[1:]) == "héllo"
    (tmp_path / "out").mkdir()
    tokenizer.save_pretrained(tmp_path / "out")
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path / "out")  # no remote code, no sentencepiece
    assert again("hello world").input_ids == tokenizer("hello world").input_ids
    assert type(again).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
