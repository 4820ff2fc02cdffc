rule dpo_train:
    """i. DPO from the SFT model (reference = SFT) on one variant's pairs (dpo, dpo_data_equal,
    scdpo, step_dpo), with one seed: {trained} is the variant, or '<variant>-seed<N>'. With
    `dpo.reference: precomputed` it reads the reference's log-probs instead of loading the model.
    """
    input:
        unpack(trained_pairs),
        model=sft_model,
    output:
        directory("results/{exp}/models/{trained}"),
    log:
        "logs/dpo_train/{exp}/{trained}.log",
    benchmark:
        "logs/benchmarks/dpo_train/{exp}/{trained}.tsv"
    priority: LONGEST_CHAIN
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        nodes=training_nodes("dpo"),
        gpu=0,
    params:
        recipe=recipe_json("dpo"),
        launcher=launcher("dpo"),
        content=launcher_content("dpo"),
        code=code("train.py"),
    # Resumable like sft_train: checkpoints outside {output}, launcher started by the CLI, a
    # failed attempt's log kept.
    shell:
        "${{SCDPO_PYTHON}} ${{SCDPO_WORKFLOW}}workflow_scripts/train.py dpo"
        " --model {input.model} --data {input.train}"
        " --eval-data {input.eval} --out {output} --recipe {params.recipe:q}"
        " --reference-logps '{input.reference}'"
        " --threads {threads} --checkpoint-dir results/{wildcards.exp}/checkpoints/{wildcards.trained}"
        " --launcher {params.launcher:q} > {log} 2>&1"
        " || {{ code=$?; cp {log} {log}.failed-$(date +%Y%m%dT%H%M%S); exit $code; }}"


rule reference_logps:
    """i. The SFT model's log-probs of every chosen and rejected completion of one pair set,
    computed once for all its DPO trainings (`dpo.reference: precomputed`).
    """
    input:
        unpack(reference_pairs),
        model=sft_model,
    output:
        "results/{exp}/pairs/{variant}/reference_logps.jsonl",
    log:
        "logs/reference_logps/{exp}/{variant}.log",
    benchmark:
        "logs/benchmarks/reference_logps/{exp}/{variant}.tsv"
    priority: LONGEST_CHAIN
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        nodes=training_nodes("dpo"),
        gpu=0,
    params:
        recipe=reference_recipe,
        launcher=launcher("dpo"),
        content=launcher_content("dpo"),
        code=code("train.py"),
    shell:
        "${{SCDPO_PYTHON}} ${{SCDPO_WORKFLOW}}workflow_scripts/train.py reference-logps"
        " --model {input.model} --data {input.train} --eval-data {input.eval} --out {output}"
        " --recipe {params.recipe:q} --threads {threads} --launcher {params.launcher:q} > {log} 2>&1"
