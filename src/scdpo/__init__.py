"""Step-Controlled DPO: the importable logic behind the Snakemake workflow."""

__version__ = "0.1.0"
