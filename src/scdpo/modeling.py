"""Base models: a tiny Llama made from scratch (the embedded default) or a real one by id or path.

Either way the method's marker tokens end up as special tokens, `<|endofmessage|>` is the EOS,
and the result is saved with `save_pretrained` so every later stage loads it the same way. A hub
id is read from the hub cache that the fetch rule filled (scdpo.hub: compute jobs are offline),
an InternLM2 checkpoint is converted to the Llama layout (scdpo.convert), and every load goes
through scdpo.loading with the experiment's `trust_remote_code`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from scdpo import hub
from scdpo.convert import is_internlm2, load_as_llama
from scdpo.jsonl import read_jsonl
from scdpo.loading import has_remote_code, load_model, load_tokenizer
from scdpo.solution import END_OF_MESSAGE, MARKERS

log = logging.getLogger(__name__)
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with digits split one by one (so numbers are copied digit by digit)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, *MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END_OF_MESSAGE,
        pad_token=PAD,
        additional_special_tokens=[m for m in MARKERS if m != END_OF_MESSAGE],
    )


def create_tiny_llama(
    tokenizer: PreTrainedTokenizerFast, spec: dict, seed: int
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by `spec` (hidden_size, layers, heads, ...)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"],
        num_key_value_heads=spec["num_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def add_marker_tokens(model, tokenizer) -> int:
    """Add missing markers as special tokens; new embedding rows get the mean of the old ones."""
    missing = [m for m in MARKERS if m not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.eos_token = END_OF_MESSAGE
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        _mean_initialise(model, old)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return len(missing)


@torch.no_grad()
def _mean_initialise(model, old_rows: int) -> None:
    embeddings = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not embeddings[0].weight:
        embeddings.append(output)
    for layer in embeddings:
        weight = layer.weight
        weight[old_rows:] = weight[:old_rows].mean(dim=0, keepdim=True)


def load_pretrained(
    name_or_path: str,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    scratch: str | Path | None = None,
):
    """A real base model by hub id (from the hub cache, never downloaded here) or local path,
    with the markers added. An InternLM2 checkpoint is converted to the Llama layout (through
    `scratch`, a folder beside the output, removed afterwards); any other model with its own
    code needs `trust_remote_code`, and saving it keeps that code beside it."""
    endpoint = os.environ.get("HF_ENDPOINT", "the default")
    state = "offline" if hub.is_offline() else "online"
    log.info("hub %s (HF_ENDPOINT=%s), cache %s", state, endpoint, hub.hub_cache())
    source = hub.local_dir(name_or_path, "model")
    if is_internlm2(source):
        scratch = scratch or Path(source).parent / "llama-conversion"
        model, tokenizer = load_as_llama(source, scratch, dtype)
        log.info("%s: InternLM2 converted to LlamaForCausalLM (native code)", name_or_path)
    else:
        tokenizer = load_tokenizer(source, trust_remote_code)
        model = load_model(source, trust_remote_code, dtype=dtype)
    added = add_marker_tokens(model, tokenizer)
    log.info("loaded %s from %s; added %d marker tokens", name_or_path, source, added)
    return model, tokenizer


def save(model, tokenizer, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


__all__ = ["has_remote_code"]  # re-exported: the vLLM engine asks it here


def load(path: str | Path, device: str = "cpu", trust_remote_code: bool | None = None):
    """A model saved by this pipeline, for inference or training (scdpo.loading: trusted where
    the folder keeps the code of a base model the config trusted)."""
    tokenizer = load_tokenizer(path, trust_remote_code)
    model = load_model(path, trust_remote_code, dtype="auto")
    return model.to(device), tokenizer


def build_base_model(spec: dict, corpus: Iterable[str], out_dir: str | Path) -> dict:
    """The `model` config block -> a saved model directory; returns facts for the log."""
    if spec["source"] == "scratch":
        tokenizer = train_tokenizer(corpus, spec["vocab_size"])
        model = create_tiny_llama(tokenizer, spec, spec["seed"])
    else:
        out_dir = Path(out_dir)
        model, tokenizer = load_pretrained(
            spec["name_or_path"],
            spec["dtype"],
            spec["trust_remote_code"],
            scratch=out_dir.with_name(out_dir.name + ".llama-conversion"),
        )
    save(model, tokenizer, out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "eos": tokenizer.eos_token,
    }


def build_base_model_from_sft_data(spec: dict, sft_data_path: str | None, out_dir: str) -> dict:
    """b. The base model directory; a scratch tokenizer is trained on the SFT examples' text."""
    rows = read_jsonl(sft_data_path) if sft_data_path else []
    corpus = (r["prompt"] + r["completion"] for r in rows)
    facts = build_base_model(spec, corpus, out_dir)
    log.info("base model: %s", facts)
    return facts


def set_threads(threads: int) -> None:
    """Respect the rule's `threads:`; default OpenMP threading collapses when cores are shared."""
    torch.set_num_threads(max(1, threads))
