"""The recipes' `trainer_args` (any other argument of TRL's SFTConfig / DPOConfig), checked at
parse time where Snakemake's env has TRL: a typo in a DPO recipe then fails before the SFT and
generation jobs run, not a day later. The training job checks again with the TRL it runs
(scdpo.train.cli.passed_through). Standard library and scdpo.config_check at import; TRL only
when a recipe has them.
"""

from __future__ import annotations

import dataclasses

from scdpo.config_check import did_you_mean


def argument_names(config_class: type) -> list[str]:
    """The arguments a TRL config class (a dataclass) takes."""
    return [f.name for f in dataclasses.fields(config_class) if f.init]


def config_errors(config: dict) -> list[tuple[tuple, str]]:
    """(key path, problem) of every `trainer_args` name the installed TRL's config class lacks;
    none where no recipe has trainer_args or Snakemake's env has no TRL."""
    asked = [
        (name, stage, spec[stage]["trainer_args"])
        for name, spec in config["experiments"].items()
        for stage in ("sft", "dpo")
        if spec[stage].get("trainer_args")
    ]
    if not asked:
        return []
    try:
        import trl
    except ImportError:
        return []
    wrong = []
    for name, stage, extra in asked:
        config_class = trl.SFTConfig if stage == "sft" else trl.DPOConfig
        fields = argument_names(config_class)
        for key in extra:
            if key not in fields:
                text = f"not an argument of trl.{config_class.__name__} (TRL {trl.__version__})"
                wrong.append(
                    (
                        ("experiments", name, stage, "trainer_args", key),
                        text + did_you_mean(key, fields),
                    )
                )
    return wrong
