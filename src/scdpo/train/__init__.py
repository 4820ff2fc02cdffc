"""SFT and DPO training with TRL, behind one CLI, with checkpoints that survive SLURM.

    python -m scdpo.train sft --model DIR --data sft.jsonl --out DIR --recipe '{...}' \
        --checkpoint-dir results/EXP/checkpoints/sft [--launcher 'accelerate launch ...']

The recipe is the JSON of the config's `sft` or `dpo` block; the rule passes it as a param so a
changed hyper-parameter re-runs exactly the trainings it affects. A re-run of a killed job resumes
from its newest complete checkpoint (scdpo.train.checkpoint); with an `accelerate launch` line
the CLI re-executes itself under it on a free rendezvous port (scdpo.train.launch).
"""

from scdpo.train.cli import main

__all__ = ["main"]
