"""SFT and DPO training with TRL, behind one CLI, with checkpoints that survive SLURM.

    python -m scdpo.train sft --model DIR --data sft.jsonl --out DIR --recipe '{...}' \
        --checkpoint-dir results/EXP/checkpoints/sft [--launcher 'accelerate launch ...']
    python -m scdpo.train reference-logps --model SFT_DIR --data train.jsonl \
        --eval-data eval.jsonl --out reference_logps.jsonl --recipe '{...dpo block...}'
    python -m scdpo.train dpo ... --reference-logps reference_logps.jsonl   # reference: precomputed

The recipe is the JSON of the config's `sft` or `dpo` block; the rule passes it as a param so a
changed hyper-parameter re-runs exactly the trainings it affects. A re-run of a killed job resumes
from its newest complete checkpoint (scdpo.train.checkpoint); with an `accelerate launch` line
the CLI re-executes itself under it on a free rendezvous port (scdpo.train.launch). The reference
model's log-probs of a pair set can be computed once (scdpo.train.reference); training curves go
to TensorBoard event files (scdpo.train.curves); SFT batches can be padding-free or packed
(scdpo.train.packing).
"""


def main(argv: list[str] | None = None) -> None:
    """The CLI (scdpo.train.cli.main), imported on call: the report imports scdpo.train.curves
    and scdpo.train.events without the CLI's modules."""
    from scdpo.train.cli import main as cli_main

    cli_main(argv)


__all__ = ["main"]
