"""A paper-shaped workspace: `config/paper.yaml` with only the scale changed, runnable on CPU.

    python tests/paper_shaped.py WORKDIR --weights-from results/micro/models/sft
    snakemake --cores 2 --directory WORKDIR --configfile WORKDIR/paper_shaped.yaml

The config keeps paper.yaml's Hugging Face ids and resources/ paths as they are, and the run
takes the paper's loading code:

- `mistralai/Mistral-7B-v0.1`: a tiny MistralForCausalLM saved as a Hugging Face directory, its
  tokenizer adding `<s>` in front of every text as Mistral's does;
- `internlm/internlm2-20b`: the same trained weights as an InternLM2 checkpoint in its released
  layout (config keys, fused `wqkv` and InternLM2's weight names in .bin shards, a SentencePiece
  tokenizer.model with the markers as added tokens, and remote-code files that fail if run):
  model_base converts it to Llama (scdpo.convert);
- `openai/gsm8k` (config `main`) and `EleutherAI/hendrycks_math` (one config per subject), laid
  out as on the hub (parquet files per config and split, configs declared in the README);
- resources/: the SFT solutions and the APE210K, CMATH and MGSM-zh JSONL files.

By default the models and datasets are directories at those very paths in WORKDIR (Hugging Face
loaders read a local directory of that name before the hub). With `--hub DIR` they are hub
repositories under DIR instead, for tests/fake_hub.py to serve: the run then fetches them on the
"login node" (rule hub_fetch) and its compute jobs read the hub cache offline
(tests/test_paper_shaped.py runs it so through SLURM):

    python tests/paper_shaped.py WORKDIR --weights-from results/micro/models/sft --hub HUB
    python tests/fake_hub.py HUB --port 8765 &
    HF_ENDPOINT=http://127.0.0.1:8765 snakemake --cores 2 --directory WORKDIR \\
        --configfile WORKDIR/paper_shaped.yaml

The problems are the embedded default's synthetic word problems written in each dataset's own
format (`#### N`, `\\boxed{N}`, `extra.answer`), and the weights come from a trained tiny model
(`--weights-from`, e.g. the micro run's SFT model): a random model would never be right, and the
DAG needs right and wrong samples to build pairs. What changes from paper.yaml is scale only
(PAPER_SCALE below): sizes, step counts, the transformers engine instead of vLLM, DeepSpeed ZeRO-3
on two CPU processes instead of four GPUs a node (envs/accelerate/zero3.yaml, written into WORKDIR
with what CPU forces changed), one node, and two of the four model families (the other two take
no code path these two do not; tests/test_problems.py covers MetaMath's format).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"
SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
KEPT_EXPERIMENTS = ("mistral_7b_ours", "internlm2_20b")
# What CPU forces on envs/accelerate/zero3.yaml: DeepSpeed's CPU accelerator (gloo, as oneCCL is
# not installed), no bf16 autocast, two processes.
ZERO3_ON_CPU = {"use_cpu": True, "mixed_precision": "no", "num_processes": 2}


def _problems(n: int, seed: int) -> list[dict]:
    from scdpo.problems import synthetic_problems

    return synthetic_problems(n, seed=seed, max_ops=2)


def _steps(problem: dict) -> str:
    return " ".join(b["content"] for b in problem["blocks"] if b["kind"] == "text")


# --- datasets laid out like the hub ----------------------------------------------------------


def write_hub_dataset(root: Path, configs: dict[str, dict[str, list[dict]]]) -> None:
    """`<config>/<split>-00000-of-00001.parquet` per config and split, declared in README.md."""
    import datasets

    datasets.disable_progress_bars()
    card = ["---", "configs:"]
    for config, splits in configs.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            relative = f"{config}/{split}-00000-of-00001.parquet"
            (root / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows).to_parquet(str(root / relative))
            card += [f"  - split: {split}", f"    path: {relative}"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))


def gsm8k_rows(problems: list[dict]) -> list[dict]:
    return [
        {"question": p["question"], "answer": f"{_steps(p)}\n#### {p['answer']}"} for p in problems
    ]


def math_rows(problems: list[dict], subject: str) -> list[dict]:
    return [
        {
            "problem": p["question"],
            "level": "Level 1",
            "type": subject,
            "solution": f"{_steps(p)} So the answer is $\\boxed{{{p['answer']}}}$.",
        }
        for p in problems
    ]


def benchmark_rows(problems: list[dict]) -> list[dict]:
    return [{"question": p["question"], "extra": {"answer": p["answer"]}} for p in problems]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_datasets(workdir: Path, scale: dict, datasets_dir: Path | None = None) -> None:
    """The hub datasets under `datasets_dir/<id>` (default: `workdir/<id>`, read as local
    directories), the resources/ files under `workdir`."""
    n_train, n_test = scale["train_questions"], scale["test_questions"]
    datasets_dir = datasets_dir or workdir
    write_hub_dataset(
        datasets_dir / "openai" / "gsm8k",
        {
            "main": {
                "train": gsm8k_rows(_problems(n_train, 11)),
                "test": gsm8k_rows(_problems(n_test, 12)),
            }
        },
    )
    write_hub_dataset(
        datasets_dir / "EleutherAI" / "hendrycks_math",
        {
            subject: {
                "train": math_rows(_problems(scale["math_train_per_subject"], 21 + i), subject),
                "test": math_rows(_problems(scale["math_test_per_subject"], 41 + i), subject),
            }
            for i, subject in enumerate(SUBJECTS)
        },
    )
    resources = workdir / "resources"
    sft = [
        {"question": p["question"], "blocks": p["blocks"], "extra": {"answer": p["answer"]}}
        for p in _problems(scale["sft_examples"], 31)
    ]
    for experiment in KEPT_EXPERIMENTS:
        _write_jsonl(resources / "sft" / f"{experiment}.jsonl", sft)
    _write_jsonl(resources / "data" / "ape210k_train.jsonl", benchmark_rows(_problems(n_train, 51)))
    for name, seed in (("ape210k_test", 52), ("cmath_test", 53), ("mgsm_zh_test", 54)):
        _write_jsonl(
            resources / "benchmarks" / f"{name}.jsonl", benchmark_rows(_problems(n_test, seed))
        )


# --- models: the real architecture, trained tiny weights ---------------------------------------

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _tokenizer_with_bos(weights_from: Path):
    """The trained tokenizer plus Mistral's specials, `<s>` added in front of every text."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(weights_from / "tokenizer.json"))
    backend.add_special_tokens([UNK, BOS, EOS])
    backend.post_processor = TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, backend.token_to_id(BOS))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def write_mistral(weights_from: Path, out_dir: Path, seed: int = 0) -> None:
    """MistralForCausalLM with the trained Llama's weights (same parameter names and shapes);
    the three new tokens' embedding rows start as the mean of the others."""
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

    from scdpo.modeling import _mean_initialise

    torch.manual_seed(seed)
    llama = AutoModelForCausalLM.from_pretrained(weights_from, dtype=torch.float32)
    tokenizer = _tokenizer_with_bos(weights_from)
    source = llama.config
    config = MistralConfig(
        vocab_size=source.vocab_size,
        hidden_size=source.hidden_size,
        intermediate_size=source.intermediate_size,
        num_hidden_layers=source.num_hidden_layers,
        num_attention_heads=source.num_attention_heads,
        num_key_value_heads=source.num_key_value_heads,
        head_dim=source.head_dim,
        max_position_embeddings=source.max_position_embeddings,
        rms_norm_eps=source.rms_norm_eps,
        sliding_window=4096,  # Mistral-7B-v0.1's
        tie_word_embeddings=source.tie_word_embeddings,
    )
    mistral = MistralForCausalLM(config)
    mistral.load_state_dict(llama.state_dict(), strict=True)
    old_rows = mistral.get_input_embeddings().weight.shape[0]
    mistral.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    _mean_initialise(mistral, old_rows)  # as the pipeline does for added marker tokens
    mistral.config.bos_token_id = tokenizer.bos_token_id
    mistral.config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    mistral.to(torch.bfloat16).save_pretrained(out_dir)  # the hub's dtype
    tokenizer.save_pretrained(out_dir)


# InternLM2 as released: its own config keys and weight names, a SentencePiece tokenizer.model,
# and modeling/tokenizer code that the pipeline must never run (these stubs fail when imported).
REMOTE_CODE = (
    "configuration_internlm2.py",
    "modeling_internlm2.py",
    "tokenization_internlm2.py",
    "tokenization_internlm2_fast.py",
)
REMOTE_STUB = (
    '"""Stand-in for InternLM2\'s remote code, which does not load on transformers 5: the '
    'pipeline converts the checkpoint instead of running this."""\n\n'
    'raise ImportError("InternLM2 remote code was run: the pipeline must convert the checkpoint")\n'
)
INTERNLM2_AUTO_MAP = {
    "AutoConfig": "configuration_internlm2.InternLM2Config",
    "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
}
SPACE = "\u2581"


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (a printable character per byte), reversed."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b], extra = chr(256 + extra), extra + 1
    return {c: b for b, c in chars.items()}


def sentencepiece_pieces(tokenizer_json: dict) -> tuple[list[tuple[str, float, int]], list[str]]:
    """The trained byte-level BPE vocabulary as SentencePiece pieces, in id order after <unk>,
    <s>, </s> (so trained id i is piece i + 3): a token whose bytes are UTF-8 text is that text
    with spaces as ▁, scored by its merge order; a lone byte that is no text, <0xXX>; the
    special tokens (pad, markers), user-defined pieces. Returns the pieces and the specials."""
    from spm_writer import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED

    decode = _byte_decoder()
    vocab = sorted(tokenizer_json["model"]["vocab"].items(), key=lambda item: item[1])
    specials = {t["content"] for t in tokenizer_json["added_tokens"]}
    pieces = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
    for token, index in vocab:
        if token in specials:
            pieces.append((token, 0.0, USER_DEFINED))
            continue
        raw = bytes(decode[c] for c in token)
        try:
            pieces.append((raw.decode("utf-8").replace(" ", SPACE), -float(index), NORMAL))
        except UnicodeDecodeError:
            single = len(raw) == 1
            pieces.append(
                (
                    f"<0x{raw[0]:02X}>" if single else f"<unused{index}>",
                    0.0,
                    BYTE if single else UNUSED,
                )
            )
    assert len({p for p, _, _ in pieces}) == len(pieces)
    return pieces, sorted(specials, key=lambda t: tokenizer_json["model"]["vocab"][t])


def _fused_wqkv(q, k, v, kv_heads: int, head_dim: int):
    """InternLM2's wqkv: per key/value head, its query heads, its key head, its value head."""
    import torch

    hidden = q.shape[1]
    q = q.reshape(kv_heads, -1, head_dim, hidden)
    k, v = (t.reshape(kv_heads, 1, head_dim, hidden) for t in (k, v))
    return torch.cat([q, k, v], dim=1).reshape(-1, hidden)


def write_internlm2(weights_from: Path, out_dir: Path) -> None:
    """The trained tiny Llama as an InternLM2 checkpoint in the released layout: config.json
    (model_type internlm2, bias, rope_theta, dynamic rope_scaling, auto_map), weights under
    InternLM2's names in two .bin shards with their index (wqkv fused by key/value head, untied
    output), tokenizer.model with the markers as special added tokens. Token i of the trained
    tokenizer is id i + 3; the new <unk>, <s>, </s> rows start as the mean of the others."""
    import torch
    from spm_writer import model_proto
    from transformers import AutoModelForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    llama = AutoModelForCausalLM.from_pretrained(weights_from, dtype=torch.float32)
    source, state = llama.config, llama.state_dict()
    tokenizer_json = json.loads((weights_from / "tokenizer.json").read_text())
    pieces, specials = sentencepiece_pieces(tokenizer_json)
    heads, kv_heads = source.num_attention_heads, source.num_key_value_heads
    head_dim = source.hidden_size // heads
    embed = state["model.embed_tokens.weight"]
    embed = torch.cat([embed.mean(0, keepdim=True).expand(3, -1), embed])
    weights = {
        "model.tok_embeddings.weight": embed,
        "model.norm.weight": state["model.norm.weight"],
        "output.weight": embed.clone(),
    }
    for i in range(source.num_hidden_layers):
        old, new = f"model.layers.{i}", f"model.layers.{i}"
        attention = [state[f"{old}.self_attn.{p}_proj.weight"] for p in "qkv"]
        weights[f"{new}.attention.wqkv.weight"] = _fused_wqkv(*attention, kv_heads, head_dim)
        weights[f"{new}.attention.wo.weight"] = state[f"{old}.self_attn.o_proj.weight"]
        for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            weights[f"{new}.feed_forward.{ours}.weight"] = state[f"{old}.mlp.{theirs}.weight"]
        weights[f"{new}.attention_norm.weight"] = state[f"{old}.input_layernorm.weight"]
        weights[f"{new}.ffn_norm.weight"] = state[f"{old}.post_attention_layernorm.weight"]
    names = sorted(weights)
    weight_map = {}
    for shard, part in enumerate((names[::2], names[1::2]), start=1):
        file = f"pytorch_model-{shard:05d}-of-00002.bin"
        torch.save({n: weights[n].to(torch.bfloat16).contiguous() for n in part}, out_dir / file)
        weight_map |= {n: file for n in part}
    index = {"metadata": {}, "weight_map": weight_map}
    (out_dir / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "attn_implementation": "eager",
        "auto_map": INTERNLM2_AUTO_MAP,
        "bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": source.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": source.intermediate_size,
        "max_position_embeddings": source.max_position_embeddings,
        "model_type": "internlm2",
        "num_attention_heads": heads,
        "num_hidden_layers": source.num_hidden_layers,
        "num_key_value_heads": kv_heads,
        "pad_token_id": 2,
        "rms_norm_eps": source.rms_norm_eps,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "rope_theta": source.rope_parameters["rope_theta"],
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.0",
        "use_cache": True,
        "vocab_size": len(pieces),
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    # No dummy prefix: the trained tokenizer put no space before a text either.
    (out_dir / "tokenizer.model").write_bytes(model_proto(pieces, add_dummy_prefix=False))
    ids = {p: i for i, (p, _, _) in enumerate(pieces)}
    added = {
        str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
        for t in ("<unk>", "<s>", "</s>", *specials)
    }  # fmt: skip
    tokenizer_config = {
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast",
            ]
        },
        "tokenizer_class": "InternLM2Tokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "decode_with_prefix_space": False,
        "added_tokens_decoder": added,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    specials_map = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials_map, indent=2))
    (out_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})
    )
    for name in REMOTE_CODE:
        (out_dir / name).write_text(REMOTE_STUB)


# --- the config: paper.yaml, scale changed -------------------------------------------------------

# Workspace sizes: questions per training and test split, per MATH subject and split, SFT
# solutions. Training questions decide how many pairs sampling finds; test questions only cost.
WORKSPACE = {
    "train_questions": 24,
    "test_questions": 4,
    "math_train_per_subject": 3,
    "math_test_per_subject": 2,
    "sft_examples": 200,
}

# Per experiment: paper.yaml's values replaced (merged one level deep); nothing else changes.
PAPER_SCALE = {
    "generation": {
        "backend": {"engine": "transformers", "device": "cpu", "batch_size": 64},
        "max_new_tokens": 48,
        "max_calls": 16,
        "max_prompt_tokens": 400,
        "chunk_size": 10,
    },
    "sampling": {"max_samples": 8, "round_size": 4, "shards": 2},
    "step_control": {"max_tries": 4, "max_pairs": 2, "shards": 2},
    # One node: the test cluster has one (InternLM2 trains on 4 in paper.yaml).
    "sft": {"max_steps": 6, "max_length": 256, "nodes": 1},
    "dpo": {"max_steps": 1, "max_length": 384, "nodes": 1},
}
REPORT_SCALE = {
    "bootstrap_samples": 1000,
    "pilot": {"temperatures": [0.0, 1.0], "limit": 5},
    "credit": {"pages": 2, "min_held_out": 2, "max_pairs": 20},
}


def _merged(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        is_block = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if is_block else value
    return merged


# On one GPU (perf/gpu_check.sh): paper.yaml's vLLM engine on one GPU and one training
# process, both families: InternLM2 reaches vLLM converted to Llama, as on the cluster.
GPU_EXPERIMENTS = KEPT_EXPERIMENTS
GPU_TRAINING = {"launcher": "python"}
GPU_ENGINE = {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.4}


def _gpu_scale(experiment: dict) -> dict:
    scale = _merged(PAPER_SCALE, {"sft": GPU_TRAINING, "dpo": GPU_TRAINING})
    # A training process shares the GPU with the engine.
    backend = experiment["generation"]["backend"] | GPU_ENGINE
    scale["generation"] = scale["generation"] | {"backend": backend}
    return scale


def paper_shaped_config(paper: dict, gpu: bool = False) -> dict:
    """paper.yaml (anchors resolved) at the scale of PAPER_SCALE, two experiments kept (on a GPU:
    vLLM and one training process)."""
    kept = GPU_EXPERIMENTS if gpu else KEPT_EXPERIMENTS
    experiments = {}
    for name in kept:
        experiment = paper["experiments"][name]
        experiments[name] = _merged(experiment, _gpu_scale(experiment) if gpu else PAPER_SCALE)
    used = {b for e in experiments.values() for b in e["benchmarks"]}
    return {
        "experiments": experiments,
        "benchmarks": {k: v for k, v in paper["benchmarks"].items() if k in used},
        "report": _merged(paper["report"], REPORT_SCALE),
    }


def write_zero3_on_cpu(workdir: Path) -> None:
    """The shipped ZeRO-3 config at its path (paper.yaml's launchers name it), CPU-adapted."""
    shipped = REPO / "envs" / "accelerate" / "zero3.yaml"
    path = workdir / "envs" / "accelerate" / "zero3.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(shipped.read_text()) | ZERO3_ON_CPU
    path.write_text(f"# {shipped.relative_to(REPO)} with {ZERO3_ON_CPU}\n" + yaml.safe_dump(config))


def build(workdir: Path, weights_from: Path, gpu: bool = False, hub: Path | None = None) -> Path:
    """The workspace in `workdir`; returns its config file. With `hub`, the models and datasets
    are repositories under `hub/models/<id>` and `hub/datasets/<id>` for a hub to serve
    (tests/fake_hub.py): the run then fetches them (rule hub_fetch) and its compute jobs read
    the hub cache offline. Without, they are local directories named like the ids."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_zero3_on_cpu(workdir)
    models = hub / "models" if hub else workdir
    write_datasets(workdir, WORKSPACE, hub / "datasets" if hub else None)
    mistral = models / "mistralai" / "Mistral-7B-v0.1"
    write_mistral(weights_from, mistral)
    write_internlm2(weights_from, models / "internlm" / "internlm2-20b")
    config = paper_shaped_config(yaml.safe_load(PAPER.read_text()), gpu)
    path = workdir / "paper_shaped.yaml"
    header = f"# Generated by tests/paper_shaped.py from {PAPER.relative_to(REPO)}: scale only.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--weights-from", type=Path, required=True, help="a trained tiny Llama")
    parser.add_argument("--gpu", action="store_true", help="vLLM and one-GPU training")
    parser.add_argument(
        "--hub", type=Path, help="write the models and datasets here, for tests/fake_hub.py"
    )
    args = parser.parse_args()
    print(build(args.workdir, args.weights_from, args.gpu, args.hub))


if __name__ == "__main__":
    main()
