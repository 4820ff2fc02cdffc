"""Defaults live in config/schema.yaml only; scdpo.config.fill_defaults puts them into a config."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from fakes import SCHEMA

from scdpo.config import fill_defaults

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config").glob("*.yaml"))


def _keys(schema: dict, where: str = "", root: dict = SCHEMA):
    """(path, subschema) of every property in the schema, through $defs and unions."""
    for key, spec in schema.get("properties", {}).items():
        yield f"{where}.{key}", spec
        yield from _keys(spec, f"{where}.{key}", root)
    for union in ("oneOf", "anyOf", "allOf"):
        for i, branch in enumerate(schema.get(union, [])):
            yield from _keys(branch, f"{where}[{union} {i}]", root)
    if isinstance(schema.get("items"), dict):
        yield from _keys(schema["items"], f"{where}[]", root)


def test_every_key_of_the_schema_is_described():
    keys = list(_keys(SCHEMA)) + [
        kv for name, spec in SCHEMA["$defs"].items() for kv in _keys(spec, f"$defs.{name}")
    ]
    undescribed = [
        path
        for path, spec in keys
        if "description" not in spec and "$ref" not in spec and not path.startswith("._shared")
    ]
    assert not undescribed, undescribed


def _descriptions(node, where=""):
    """(path, description) of every description in the schema, and (path, None) for every key
    whose value is null: an unquoted comma in a flow map `{description: a, b, ...}` cuts the
    description at the comma and makes the rest a key with no value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None:
                yield f"{where}.{key}", None
            elif key == "description" and isinstance(value, str):
                yield where, value
            yield from _descriptions(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _descriptions(item, f"{where}[{i}]")


def test_every_description_is_whole():
    cut = [(path, text) for path, text in _descriptions(SCHEMA) if not text or text[-1] != "."]
    assert not cut, cut
    text = {path: d for path, d in _descriptions(SCHEMA)}
    assert text[".$defs.experiment.properties.sampling.properties.max_samples"] == (
        "K, samples per question at most (paper 100)."
    )


def test_defaults_fill_only_the_matching_branch_of_a_union():
    sources = [{"source": "synthetic", "n": 3, "seed": 0}, {"source": "jsonl", "path": "x"}]
    filled = fill_defaults(
        copy.deepcopy(sources),
        SCHEMA["$defs"]["experiment"]["properties"]["data"]["properties"]["dpo"],
        SCHEMA,
    )
    assert filled[0] == {"source": "synthetic", "n": 3, "seed": 0, "max_ops": 3, "offset": 0}
    assert filled[1] == {
        "source": "jsonl",
        "path": "x",
        "question_key": "question",
        "answer_key": "extra.answer",
        "answer_format": "plain",
    }


def test_defaults_never_replace_a_given_value():
    block = {"source": "hf", "id": "d", "split": "train", "answer_key": "solution"}
    fill_defaults(block, SCHEMA["$defs"]["problem_source"], SCHEMA)
    assert block["answer_key"] == "solution" and block["question_key"] == "question"


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name != "schema.yaml"], ids=str)
def test_shipped_configs_get_every_default(path):
    config = fill_defaults(yaml.safe_load(path.read_text()), SCHEMA)
    assert config["report"]["pilot"]["limit"] >= 1
    for spec in config["experiments"].values():
        backend = spec["generation"]["backend"]
        assert {"device", "batch_size", "streaming", "tensor_parallel_size"} <= set(backend)
        sources = (
            spec["data"]["dpo"] if isinstance(spec["data"]["dpo"], list) else [spec["data"]["dpo"]]
        )
        for source in [spec["data"]["sft"], *sources]:
            assert "answer_format" in source or source["source"] == "synthetic"
            assert "max_ops" in source or source["source"] != "synthetic"


def _schema_defaults(node, found=None) -> dict[str, list]:
    """Every property name of the schema with a default -> its defaults (a name may recur)."""
    found = {} if found is None else found
    if isinstance(node, dict):
        for key, spec in node.get("properties", {}).items():
            if isinstance(spec, dict) and "default" in spec:
                found.setdefault(key, []).append(spec["default"])
        for value in node.values():
            _schema_defaults(value, found)
    elif isinstance(node, list):
        for item in node:
            _schema_defaults(item, found)
    return found


def _fallbacks(root: Path):
    """(file:line, key, value) of every `<x>.get("key", <literal>)` in the package and rules."""
    import ast
    import re

    for path in sorted((root / "src").rglob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {}  # module-level NAME = <literal>, the value a fallback may name
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                try:
                    constants[getattr(node.targets[0], "id", None)] = ast.literal_eval(node.value)
                except ValueError:
                    pass
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
            ):
                fallback = node.args[1]
                if isinstance(fallback, ast.Name) and fallback.id in constants:
                    value = constants[fallback.id]
                else:
                    try:
                        value = ast.literal_eval(fallback)
                    except ValueError:
                        continue
                yield f"{path.relative_to(root)}:{node.lineno}", node.args[0].value, value
    # Rule files are not Python: the calls found by their text.
    call = re.compile(r"\.get\(\s*\"(\w+)\",\s*([^()]+?)\)")
    for path in sorted([root / "Snakefile", *(root / "rules").glob("*.smk")]):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for key, literal in call.findall(line):
                try:
                    yield f"{path.relative_to(root)}:{number}", key, ast.literal_eval(literal)
                except (ValueError, SyntaxError):
                    continue


def test_code_keeps_no_fallback_that_differs_from_the_schemas_default():
    """A default lives in config/schema.yaml; a `.get(key, value)` in code may only repeat it
    (for callers that pass a partial block), never differ from it."""
    root = Path(__file__).resolve().parents[1]
    defaults = _schema_defaults(SCHEMA)
    checked, wrong = 0, []
    for where, key, value in _fallbacks(root):
        if key in defaults:
            checked += 1
            if value not in defaults[key]:
                wrong.append(f"{where}: .get({key!r}, {value!r}), schema default {defaults[key]}")
    assert checked >= 10  # the scan finds the training CLI's fallbacks, at least
    assert not wrong, "\n".join(wrong)
