rule model_base:
    """b. The base model with the marker tokens as special tokens (scratch: tiny Llama + tokenizer;
    a hub model from the hub cache, offline; InternLM2 converted to the Llama layout).
    """
    input:
        unpack(base_model_inputs),
        unpack(hub_fetched),
    output:
        directory("results/{exp}/models/base"),
    log:
        "logs/model_base/{exp}.log",
    benchmark:
        "logs/benchmarks/model_base/{exp}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=model_base_mem_mb,
        runtime=model_base_runtime,
    params:
        spec=model_spec,
        content=model_content,
        code=code("model_base.py"),
    script:
        "../workflow_scripts/model_base.py"


rule sft_train:
    """c. Supervised fine-tuning with TRL's SFTTrainer."""
    input:
        model="results/{exp}/models/base",
        data="results/{exp}/sft/data.jsonl",
    output:
        directory("results/{exp}/models/sft"),
    log:
        "logs/sft_train/{exp}.log",
    benchmark:
        "logs/benchmarks/sft_train/{exp}.tsv"
    priority: LONGEST_CHAIN
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        nodes=training_nodes("sft"),
        gpu=0,
    params:
        recipe=recipe_json("sft"),
        launcher=launcher("sft"),
        content=launcher_content("sft"),
        code=code("train.py"),
    # Checkpoints live outside {output} (deleted on failure): a re-run, or SLURM's retry after
    # the time limit or a preemption, resumes there. The CLI starts the launcher itself, on a free
    # rendezvous port, and exits 75 after saving on a stop signal (docs/slurm.md). Snakemake deletes
    # the log before a retry, so a failed attempt first copies it to <log>.failed-<time>.
    shell:
        "${{SCDPO_PYTHON}} ${{SCDPO_WORKFLOW}}workflow_scripts/train.py sft"
        " --model {input.model} --data {input.data}"
        " --out {output} --recipe {params.recipe:q} --threads {threads}"
        " --checkpoint-dir results/{wildcards.exp}/checkpoints/sft"
        " --launcher {params.launcher:q} > {log} 2>&1"
        " || {{ code=$?; cp {log} {log}.failed-$(date +%Y%m%dT%H%M%S); exit $code; }}"
