"""The training tests' model: a tokenizer trained on the test's own texts and a 2-layer Llama of
width 32, saved as a Hugging Face directory as model_base writes one."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from scdpo.modeling import create_tiny_llama, save, train_tokenizer


def save_tiny_llama(texts: Iterable[str], folder: Path, max_position_embeddings: int = 128) -> None:
    tokenizer = train_tokenizer(texts, vocab_size=300)
    spec = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "max_position_embeddings": max_position_embeddings,
    }
    save(create_tiny_llama(tokenizer, spec, seed=0), tokenizer, folder)
