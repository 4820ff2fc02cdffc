rule model_base:
    """b. The base model with the marker tokens as special tokens (scratch: tiny Llama + tokenizer)."""
    input:
        unpack(base_model_inputs),
    output:
        directory("results/{exp}/models/base"),
    params:
        spec=model_spec,
    log:
        "logs/model_base/{exp}.log",
    benchmark:
        "logs/benchmarks/model_base/{exp}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=32000,
        runtime=60,
    threads: 2
    script:
        "../workflow_scripts/model_base.py"


rule sft_train:
    """c. Supervised fine-tuning with TRL's SFTTrainer."""
    input:
        model="results/{exp}/models/base",
        data="results/{exp}/sft/data.jsonl",
    output:
        directory("results/{exp}/models/sft"),
    params:
        recipe=recipe_json("sft"),
        launcher=launcher("sft"),
    log:
        "logs/sft_train/{exp}.log",
    benchmark:
        "logs/benchmarks/sft_train/{exp}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=0,
    threads: 2
    shell:
        "{params.launcher} -m scdpo.train sft --model {input.model} --data {input.data}"
        " --out {output} --recipe '{params.recipe}' --threads {threads} > {log} 2>&1"
