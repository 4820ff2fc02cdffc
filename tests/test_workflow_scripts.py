"""Every name a workflow script imports exists: a broken import otherwise shows only mid-run."""

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "workflow_scripts").glob("*.py"))


def imported_names(script: Path) -> list[tuple[str, str]]:
    """(module, name) for each `from scdpo... import name` in the script."""
    tree = ast.parse(script.read_text(), filename=str(script))
    return [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scdpo")
        for alias in node.names
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_workflow_script_imports_resolve(script: Path):
    missing = [
        f"{module}.{name}"
        for module, name in imported_names(script)
        if not hasattr(importlib.import_module(module), name)
    ]
    assert not missing, f"{script.name} imports names that do not exist: {missing}"


def test_the_check_sees_the_scripts_imports():
    names = {name for script in SCRIPTS for _, name in imported_names(script)}
    assert {"accuracy_report", "credit_report"} <= names


def test_every_variant_has_a_pair_set():
    # The rules and the package read the variants from scdpo.names; each needs a pair builder.
    import yaml

    from scdpo.names import MODEL_LABELS, MODELS, PAPER_VARIANTS, VARIANTS
    from scdpo.pairs import PAIR_SETS

    assert tuple(PAIR_SETS) == VARIANTS
    assert MODELS == ("sft", *VARIANTS) and set(MODEL_LABELS) == set(MODELS)
    # The schema's `variants` offers exactly these, and defaults to the paper's three.
    schema = yaml.safe_load((SCRIPTS[0].parents[1] / "config" / "schema.yaml").read_text())
    variants = schema["$defs"]["experiment"]["properties"]["variants"]
    assert variants["items"]["enum"] == list(VARIANTS)
    assert variants["default"] == list(PAPER_VARIANTS)
    common = (SCRIPTS[0].parents[1] / "rules" / "common.smk").read_text()
    assert "from scdpo.names import" in common and "\nVARIANTS = " not in common


def test_seed_names_round_trip_and_keep_the_recipe_seed_plain():
    from scdpo.names import model_label, model_order, seed_of, trained_name, variant_of

    assert trained_name("scdpo", 0, recipe_seed=0) == "scdpo"
    assert trained_name("dpo_data_equal", 2, recipe_seed=0) == "dpo_data_equal-seed2"
    for name, seed in (("scdpo", 5), ("step_dpo-seed3", 3)):
        assert seed_of(name, recipe_seed=5) == seed
        assert trained_name(variant_of(name), seed, recipe_seed=5) == name
    assert variant_of("sft") == "sft" and model_label("step_dpo-seed3") == "Step-DPO seed 3"
    assert model_order("scdpo-seed1") == model_order("scdpo") < model_order("step_dpo")
