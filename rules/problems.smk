rule problems_prepare:
    """a. Training questions: the SFT set (with reference solutions) and the set sampled for pairs."""
    output:
        ensure("results/{exp}/problems/{subset}.jsonl", non_empty=True),
    log:
        "logs/problems_prepare/{exp}/{subset}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=problem_source,
        solution_format=solution_format,
        content=problem_content,
        code=code("problems_prepare.py"),
    script:
        "../workflow_scripts/problems_prepare.py"


rule benchmark_prepare:
    """Evaluation questions with their gold answers, shared by all experiments."""
    output:
        ensure("results/benchmarks/{benchmark}.jsonl", non_empty=True),
    log:
        "logs/benchmark_prepare/{benchmark}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=benchmark_source,
        content=benchmark_content,
        code=code("problems_prepare.py"),
    script:
        "../workflow_scripts/problems_prepare.py"


rule sft_data:
    """Prompt/completion pairs for SFT, serialised with the marker tokens."""
    input:
        "results/{exp}/problems/sft.jsonl",
    output:
        ensure("results/{exp}/sft/data.jsonl", non_empty=True),
    log:
        "logs/sft_data/{exp}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        system_prompt=system_prompt,
        code=code("sft_data.py"),
    script:
        "../workflow_scripts/sft_data.py"
