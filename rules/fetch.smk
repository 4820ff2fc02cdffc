rule hub_fetch:
    """Every hub model and dataset of an experiment into the hub cache, on the login node: the
    one job that reaches the hub (with the user's token); compute jobs read the cache offline.
    """
    output:
        hub.marker("{exp}"),
    log:
        "logs/hub_fetch/{exp}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=24 * 60,
    params:
        sources=hub_sources,
        code=code("hub_fetch.py"),
    script:
        "../workflow_scripts/hub_fetch.py"
