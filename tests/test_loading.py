"""Every stage loads a model folder through the one loader (scdpo.loading) with the experiment's
`trust_remote_code`, each the way its rule does: model_base (scdpo.modeling.build_base_model),
training (scdpo.train.cli), pairs (scdpo.pairs' tokenizer), generation and credit scoring
(scdpo.modeling.load), vLLM (the flag scdpo.generation.vllm_engine passes). An InternLM2
checkpoint in its released layout goes through model_base and every one of them loads it with
native code, with InternLM2's logits."""

from __future__ import annotations

import json

import pytest
import torch
from test_convert import (
    DYNAMIC,
    USER,
    internlm2_config,
    internlm2_forward,
    internlm2_weights,
    sentencepiece_model,
    write_checkpoint,
)

from scdpo.loading import has_remote_code, load_model, load_tokenizer
from scdpo.modeling import build_base_model, load
from scdpo.pairs import _Tokenizer
from scdpo.solution import MARKERS

REMOTE_STUB = 'raise ImportError("remote code was run")\n'


def _every_stage(folder, trust: bool | None):
    """(stage, model or tokenizer) as each rule loads the folder."""
    from scdpo.train.cli import load_model as train_model
    from scdpo.train.cli import load_tokenizer as train_tokenizer

    recipe = {"trust_remote_code": bool(trust), "dtype": "float32", "attn_implementation": "eager"}
    model, tokenizer = load(folder)  # generation (transformers engine) and credit scoring
    return {
        "train model": train_model(str(folder), recipe),
        "train tokenizer": train_tokenizer(str(folder), recipe),
        "pairs tokenizer": _Tokenizer(str(folder)).tokenizer,
        "generation model": model,
        "generation tokenizer": tokenizer,
    }


def test_internlm2_goes_through_model_base_and_loads_with_native_code_everywhere(tmp_path):
    data, pieces = sentencepiece_model()
    config = internlm2_config(False, DYNAMIC, vocab=len(pieces))
    weights = internlm2_weights(config)
    source = tmp_path / "internlm" / "internlm2-20b"
    write_checkpoint(source, config, weights, "bin", 2)
    (source / "tokenizer.model").write_bytes(data)
    remote = {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}
    (source / "tokenizer_config.json").write_text(json.dumps({"auto_map": remote}))
    for name in ("modeling_internlm2.py", "tokenization_internlm2.py"):
        (source / name).write_text(REMOTE_STUB)  # never run
    spec = {"source": "hf", "name_or_path": str(source), "dtype": "float32"}
    spec["trust_remote_code"] = False
    base = tmp_path / "results" / "models" / "base"
    facts = build_base_model(spec, [], base)
    # The markers the model lacks are added (<|text|> is a piece of its own); pad is </s>.
    assert facts["vocab_size"] == len(pieces) + len(set(MARKERS) - set(USER))
    assert not has_remote_code(base) and not list(base.glob("*.py"))
    assert not (base.parent / "base.llama-conversion").exists()
    assert json.loads((base / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    ids = torch.tensor([1, 274, 280, 13, 263, 282, 270, 271])  # <s> and pieces of the model
    expected = internlm2_forward(config, weights, ids)
    for stage, loaded in _every_stage(base, trust=False).items():
        if "model" in stage:
            assert type(loaded).__name__ == "LlamaForCausalLM", stage
            with torch.no_grad():
                got = loaded(ids[None].to(loaded.device)).logits[0, :, : len(pieces)].float()
            assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), stage
        else:
            assert loaded("hello world").input_ids == [1, 276, 280], stage
            assert loaded.convert_tokens_to_ids("<|endofblock|>") >= len(pieces), stage


# --- a model with its own code: trusted where the experiment's config trusted it ---------------

CONFIG_CODE = """from transformers import LlamaConfig


class CustomConfig(LlamaConfig):
    model_type = "custom_llama"
"""
MODEL_CODE = """from transformers import LlamaForCausalLM

from .configuration_custom import CustomConfig


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
"""
TOKENIZER_CODE = """from transformers import PreTrainedTokenizerFast


class CustomTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.fixture
def remote_code_model(tmp_path):
    """A tiny Llama saved with its own config, model and tokenizer classes beside it (auto_map),
    as a remote-code base model the config trusts leaves its saved folders."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path / "custom"
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(folder)
    small = LlamaConfig(
        vocab_size=3, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    LlamaForCausalLM(small).save_pretrained(folder)
    for name, code in (
        ("configuration_custom.py", CONFIG_CODE),
        ("modeling_custom.py", MODEL_CODE),
        ("tokenization_custom.py", TOKENIZER_CODE),
    ):
        (folder / name).write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config |= {
        "model_type": "custom_llama",
        "architectures": ["CustomForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]}
    tokenizer_config["tokenizer_class"] = "CustomTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def test_every_stage_trusts_a_saved_folders_own_code(remote_code_model):
    from scdpo.generation import vllm_engine

    assert has_remote_code(remote_code_model)
    assert vllm_engine.has_remote_code(remote_code_model)  # vLLM's trust_remote_code
    for stage, loaded in _every_stage(remote_code_model, trust=True).items():
        expected = "CustomForCausalLM" if "model" in stage else "CustomTokenizer"
        assert type(loaded).__name__ == expected, stage


def test_the_experiments_setting_is_passed_as_it_is(remote_code_model):
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(remote_code_model, trust_remote_code=False)
    assert type(load_tokenizer(remote_code_model, True)).__name__ == "CustomTokenizer"
