# The report (Table 1 with confidence is rules/evaluate.smk's table_accuracy): the temperature
# pilot (paper Fig. 5), credit assignment (Fig. 2/3) with its localisation metric, data
# statistics, training curves and cost; `snakemake --report` renders every output flagged
# report(...) into one page (the report directive is in the Snakefile).


rule pilot_problems:
    """Fig. 5 pilot: a seeded subset of one benchmark's questions."""
    input:
        "results/benchmarks/{benchmark}.jsonl",
    output:
        "results/pilot/{benchmark}/problems.jsonl",
    log:
        "logs/pilot_problems/{benchmark}.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        limit=PILOT["limit"],
        seed=PILOT["seed"],
        code=code("report_pilot_problems.py"),
    script:
        "../workflow_scripts/report_pilot_problems.py"


rule pilot_predict:
    """Fig. 5 pilot: the SFT model's answers at every pilot temperature on one benchmark
    (evaluation's code path): one engine load, one file per temperature in the output folder.
    """
    input:
        model=sft_model,
        questions="results/pilot/{benchmark}/problems.jsonl",
    output:
        directory("results/{exp}/pilot/{benchmark}"),
    log:
        "logs/pilot_predict/{exp}/{benchmark}.log",
    benchmark:
        "logs/benchmarks/pilot_predict/{exp}/{benchmark}.tsv"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=generation_gpus,
    params:
        parts=pilot_parts,
        code=code("predict.py"),
    script:
        "../workflow_scripts/predict.py"


rule pilot_plot:
    """Fig. 5: SFT accuracy against temperature, with intervals."""
    input:
        pilot=pilot_predictions,
    output:
        csv="results/{exp}/report/pilot.csv",
        png=report(
            "results/{exp}/report/pilot.png",
            caption="../report/pilot.rst",
            category="2. Temperature pilot",
            labels={"experiment": "{exp}", "figure": "SFT accuracy vs temperature"},
        ),
    log:
        "logs/pilot_plot/{exp}.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        pilot=pilot_keys,
        statistics=statistics_params,
        code=code("report_pilot.py"),
    script:
        "../workflow_scripts/report_pilot.py"


rule credit_assign:
    """Fig. 2/3: token implicit rewards of the DPO-trained models on step-controlled pairs."""
    input:
        unpack(credit_models),
        train="results/{exp}/pairs/scdpo/train.jsonl",
        eval="results/{exp}/pairs/scdpo/eval.jsonl",
    output:
        pages=report(
            directory("results/{exp}/report/credit"),
            patterns=["{page}.html"],
            caption="../report/credit.rst",
            category="3. Credit assignment",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "page": "{page}"},
        ),
        csv="results/{exp}/report/localisation.csv",
        md="results/{exp}/report/localisation.md",
        html=report(
            "results/{exp}/report/localisation.html",
            caption="../report/localisation.rst",
            category="3. Credit assignment",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "page": "localisation metric"},
        ),
        rewards="results/{exp}/report/block_rewards.jsonl",
    log:
        "logs/credit_assign/{exp}.log",
    benchmark:
        "logs/benchmarks/credit_assign/{exp}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=0,
    params:
        credit=credit_params,
        code=code("report_credit.py"),
    script:
        "../workflow_scripts/report_credit.py"


rule data_stats:
    """Data per source beside the paper's counts, samples per pair, yield per split index,
    temperatures of wrong continuations, lengths."""
    input:
        samples="results/{exp}/sampling/samples.jsonl",
        negatives="results/{exp}/step_control/negatives.jsonl",
        pairs=experiment_pair_files,
    output:
        md="results/{exp}/report/data_stats.md",
        yields="results/{exp}/report/sc_yield_by_k.csv",
        scale="results/{exp}/report/data_scale.csv",
        html=report(
            "results/{exp}/report/data_stats.html",
            caption="../report/data_stats.rst",
            category="4. Data statistics",
            labels={"experiment": "{exp}", "content": "tables"},
        ),
        png=report(
            "results/{exp}/report/data_stats.png",
            caption="../report/data_stats.rst",
            category="4. Data statistics",
            labels={"experiment": "{exp}", "content": "figure"},
        ),
    log:
        "logs/data_stats/{exp}.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        pairs=experiment_pair_keys,
        paper_model=paper_model,
        code=code("report_data.py"),
    script:
        "../workflow_scripts/report_data.py"


rule table_cost:
    """Wall time, CPU time, memory and GPU-hours per stage from the benchmark files."""
    input:
        benchmarks=all_benchmark_files,
    output:
        csv="results/tables/cost.csv",
        md="results/tables/cost.md",
        html=report(
            "results/tables/cost.html",
            caption="../report/cost.rst",
            category="5. Cost",
            labels={"table": "cost per stage"},
        ),
    log:
        "logs/table_cost/table.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        benchmarks=benchmark_keys,
        gpus=rule_gpus,
        code=code("report_cost.py"),
    script:
        "../workflow_scripts/report_cost.py"


rule training_curves:
    """Training curves of every training of an experiment (loss, learning rate, DPO reward margins
    and accuracies, eval loss, throughput) from the TensorBoard files in each model's folder.
    """
    input:
        trainings,
    output:
        csv="results/{exp}/report/curves.csv",
        png=report(
            "results/{exp}/report/curves.png",
            caption="../report/curves.rst",
            category="6. Training curves",
            labels={"experiment": "{exp}", "figure": "training curves"},
        ),
    log:
        "logs/training_curves/{exp}.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        names=training_names,
        code=code("report_curves.py"),
    script:
        "../workflow_scripts/report_curves.py"
