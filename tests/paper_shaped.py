"""A paper-shaped workspace: `config/paper.yaml` with only the scale changed, runnable on CPU.

    python tests/paper_shaped.py WORKDIR --weights-from results/micro/models/sft
    snakemake --cores 2 --directory WORKDIR --configfile WORKDIR/paper_shaped.yaml

The config keeps paper.yaml's Hugging Face ids and resources/ paths as they are: WORKDIR holds
local stand-ins at those very paths (Hugging Face loaders take a local directory of that name
before the hub), so the run takes the paper's loading code:

- `mistralai/Mistral-7B-v0.1`: a tiny MistralForCausalLM saved as a Hugging Face directory, its
  tokenizer adding `<s>` in front of every text as Mistral's does;
- `internlm/internlm2-20b`: the same weights behind remote code (`auto_map`, a
  `modeling_internlm2.py` beside the weights), loadable only with `trust_remote_code`;
- `openai/gsm8k` (config `main`) and `EleutherAI/hendrycks_math` (one config per subject), laid
  out as on the hub (parquet files per config and split, configs declared in the README);
- resources/: the SFT solutions and the APE210K, CMATH and MGSM-zh JSONL files.

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
import shutil
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


def write_datasets(workdir: Path, scale: dict) -> None:
    n_train, n_test = scale["train_questions"], scale["test_questions"]
    write_hub_dataset(
        workdir / "openai" / "gsm8k",
        {
            "main": {
                "train": gsm8k_rows(_problems(n_train, 11)),
                "test": gsm8k_rows(_problems(n_test, 12)),
            }
        },
    )
    write_hub_dataset(
        workdir / "EleutherAI" / "hendrycks_math",
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

INTERNLM2_CONFIG = '''"""Stand-in for InternLM2's remote configuration code."""

from transformers import MistralConfig


class InternLM2Config(MistralConfig):
    model_type = "internlm2"
'''

INTERNLM2_MODELING = '''"""Stand-in for InternLM2's remote modeling code: transformers has no
internlm2 class, so this loads only with trust_remote_code, as the real model does."""

from transformers import MistralForCausalLM

from .configuration_internlm2 import InternLM2Config


class InternLM2ForCausalLM(MistralForCausalLM):
    config_class = InternLM2Config
'''


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


def write_internlm2(mistral_dir: Path, out_dir: Path) -> None:
    """The same weights behind remote code: `auto_map` names the modeling files beside them."""
    shutil.copytree(mistral_dir, out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    config |= {
        "model_type": "internlm2",
        "architectures": ["InternLM2ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
        },
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "configuration_internlm2.py").write_text(INTERNLM2_CONFIG)
    (out_dir / "modeling_internlm2.py").write_text(INTERNLM2_MODELING)


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


# On one GPU (benchmarks/gpu_check.sh): paper.yaml's vLLM engine on one GPU and one training
# process. Only Mistral-7B-Ours: vLLM has its own InternLM2 class, which the stand-in's Mistral
# weight names do not fit.
GPU_EXPERIMENTS = ("mistral_7b_ours",)
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
    vLLM and one training process, one experiment)."""
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


def build(workdir: Path, weights_from: Path, gpu: bool = False) -> Path:
    """The workspace in `workdir`; returns its config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_zero3_on_cpu(workdir)
    write_datasets(workdir, WORKSPACE)
    mistral = workdir / "mistralai" / "Mistral-7B-v0.1"
    write_mistral(weights_from, mistral)
    write_internlm2(mistral, workdir / "internlm" / "internlm2-20b")
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
    args = parser.parse_args()
    print(build(args.workdir, args.weights_from, args.gpu))


if __name__ == "__main__":
    main()
