"""InternLM2 checkpoints in the Llama layout, so that every stage runs them with native code.

InternLM2 (internlm/internlm2-20b) ships its modeling and tokenizer code as remote code written
for transformers 4: on the pinned transformers 5 it does not load (the newer modeling file
imports `transformers.modeling_attn_mask_utils`, and the code calls
`DynamicCache.from_legacy_cache` / `get_usable_length`, all removed; it needs `einops`, the
tokenizer `sentencepiece`, neither in the envs; the fast tokenizer's converter calls the old
`SentencePieceExtractor.extract`). Its
architecture is Llama's with fused and renamed weights, so `model_base` converts it, as
InternLM's own tools/convert2llama.py does:

- `attention.wqkv` holds, per key/value head, its `q_per_kv` query heads, then its key head, then
  its value head (`(kv_heads * (q_per_kv + 2) * head_dim, hidden)`): split by those groups into
  `self_attn.{q,k,v}_proj` (a bias the same way when `bias` is set: Llama's `attention_bias`);
- `attention.wo` -> `self_attn.o_proj`, `feed_forward.w1/w3/w2` -> `mlp.gate/up/down_proj`,
  `attention_norm` / `ffn_norm` -> `input_layernorm` / `post_attention_layernorm`,
  `tok_embeddings` -> `embed_tokens`, `output` -> `lm_head`;
- the config: the same sizes, `bias` -> `attention_bias`, `rope_theta` and `rope_scaling`
  (dynamic / linear) -> Llama's `rope_parameters`;
- the tokenizer: tokenizer.model as a fast tokenizer (scdpo.spm).

Both use rotate-half RoPE, the same RMSNorm and SwiGLU, so logits are equal
(tests/test_convert.py checks them against a forward pass written from the architecture).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

INDEX = {".safetensors": "model.safetensors.index.json", ".bin": "pytorch_model.bin.index.json"}
RENAMES = (
    ("attention.wo.", "self_attn.o_proj."),
    ("feed_forward.w1.", "mlp.gate_proj."),
    ("feed_forward.w3.", "mlp.up_proj."),
    ("feed_forward.w2.", "mlp.down_proj."),
    ("attention_norm.", "input_layernorm."),
    ("ffn_norm.", "post_attention_layernorm."),
    ("model.tok_embeddings.", "model.embed_tokens."),
)
# InternLM2 config keys that describe the checkpoint, not the architecture.
DROPPED = {
    "_name_or_path",
    "architectures",
    "attn_implementation",
    "auto_map",
    "bias",
    "model_type",
    "rope_scaling",
    "rope_theta",
    "tokenizer_class",
    "transformers_version",
}


def is_internlm2(folder: str | Path) -> bool:
    """Whether a checkpoint folder holds an InternLM2 model (its config.json says so)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text())
    return config.get("model_type") == "internlm2" or "InternLM2ForCausalLM" in (
        config.get("architectures") or []
    )


def llama_config(config: dict) -> dict:
    """InternLM2's config.json as LlamaConfig keyword arguments."""
    heads = config["num_attention_heads"]
    theta = config.get("rope_theta", 10000)
    scaling = config.get("rope_scaling")
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind not in ("dynamic", "linear"):
            raise ValueError(f"rope_scaling type {kind!r}: InternLM2 knows dynamic and linear")
        rope = {"rope_type": kind, "factor": float(scaling["factor"]), "rope_theta": theta}
    else:
        rope = {"rope_type": "default", "rope_theta": theta}
    kept = {k: v for k, v in config.items() if k not in DROPPED}
    return {
        **kept,
        "num_key_value_heads": config.get("num_key_value_heads", heads),
        "head_dim": config["hidden_size"] // heads,
        "attention_bias": bool(config.get("bias", False)),
        "mlp_bias": False,
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "rope_parameters": rope,
        "architectures": ["LlamaForCausalLM"],
    }


def split_wqkv(
    tensor: torch.Tensor, kv_heads: int, q_per_kv: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """wqkv's weight (rows: outputs) or bias into q, k, v, by the grouped heads."""
    grouped = tensor.reshape(kv_heads, q_per_kv + 2, head_dim, *tensor.shape[1:])
    q, k, v = torch.split(grouped, [q_per_kv, 1, 1], dim=1)
    rest = tensor.shape[1:]
    return tuple(t.reshape(-1, *rest).contiguous() for t in (q, k, v))


def convert_state(states: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """One shard's tensors, renamed and split into Llama's layout."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config["hidden_size"] // heads
    out = {}
    for name, tensor in states.items():
        if ".attention.wqkv." in name:
            prefix, suffix = name.split(".attention.wqkv.")
            parts = split_wqkv(tensor, kv_heads, heads // kv_heads, head_dim)
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                out[f"{prefix}.self_attn.{proj}.{suffix}"] = part
            continue
        if name.startswith("output."):
            out["lm_head." + name.removeprefix("output.")] = tensor
            continue
        for old, new in RENAMES:
            name = name.replace(old, new)
        out[name] = tensor
    return out


def _load(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight shards: safetensors where there are any, else PyTorch .bin."""
    for suffix in (".safetensors", ".bin"):
        found = sorted(p for p in folder.glob(f"*{suffix}") if p.is_file())
        if found:
            return found
    raise FileNotFoundError(f"{folder}: no *.safetensors or *.bin weights")


def convert_checkpoint(source: str | Path, target: str | Path) -> dict:
    """Write `source` (an InternLM2 checkpoint folder) as a Llama checkpoint into `target`:
    config.json and safetensors shards, one per source shard (one in memory at a time).
    The tokenizer is written by `convert_tokenizer`."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    weight_map, total = {}, 0
    files = weight_files(source)
    for i, path in enumerate(files, start=1):
        converted = convert_state(_load(path), config)
        name = f"model-{i:05d}-of-{len(files):05d}.safetensors"
        name = "model.safetensors" if len(files) == 1 else name
        save_file(converted, str(target / name), metadata={"format": "pt"})
        weight_map |= {key: name for key in converted}
        total += sum(t.numel() * t.element_size() for t in converted.values())
        del converted
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (target / INDEX[".safetensors"]).write_text(json.dumps(index, indent=2))
    LlamaConfig(**llama_config(config)).save_pretrained(target)
    for extra in ("generation_config.json",):
        if (source / extra).is_file():
            shutil.copy(source / extra, target / extra)
    facts = {"shards": len(files), "bytes": total, "tensors": len(weight_map)}
    log.info("converted InternLM2 %s to the Llama layout: %s", source, facts)
    return facts


def convert_tokenizer(source: str | Path):
    """InternLM2's tokenizer.model as a fast tokenizer (scdpo.spm), its notes logged."""
    from scdpo.spm import fast_tokenizer

    tokenizer, notes = fast_tokenizer(source)
    for note in notes:
        log.warning("tokenizer conversion: %s", note)
    return tokenizer


def load_as_llama(source: str | Path, scratch: str | Path, dtype: str = "auto"):
    """An InternLM2 checkpoint as (LlamaForCausalLM, fast tokenizer): converted into `scratch`
    (removed afterwards), then loaded with transformers' own Llama code."""
    from transformers import LlamaForCausalLM

    scratch = Path(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        convert_checkpoint(source, scratch)
        model = LlamaForCausalLM.from_pretrained(scratch, dtype=dtype)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return model, convert_tokenizer(source)
