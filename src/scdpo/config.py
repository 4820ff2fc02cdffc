"""Config defaults live in one place, `config/schema.yaml`; this fills them into a config.

Snakemake's `validate` fills the defaults of plain objects but not of the branches of a `oneOf`
(a problem source is synthetic, jsonl or hf; a model is scratch or hf), whose defaults would leak
into the wrong branch. Here a branch is chosen by its `const` properties (`source: jsonl`) and only
its defaults are filled, so every block the rules pass to the package is complete: the code reads
keys, never defaults of its own, and a changed default is a changed param (it re-runs the jobs).
The same walk reads numbers that PyYAML leaves as strings (`1e-7`) as numbers where the schema
wants one (read_numbers). Checking the config is scdpo.config_check.

Standard library only: `rules/common.smk` imports this at parse time.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

# A number as YAML or Python writes it; PyYAML reads one without a dot (1e-7, 1e5) as a string.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def resolve(schema: dict, root: dict) -> dict:
    """`schema` with its `$ref` (to `root`) resolved, its own keys on top."""
    while "$ref" in schema:
        path = schema["$ref"].removeprefix("#/").split("/")
        target: Any = root
        for part in path:
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branch_matches(branch: dict, instance: Any, root: dict) -> bool:
    """Whether `instance` belongs to this branch of a union, judged by type, consts, required."""
    branch = resolve(branch, root)
    if isinstance(instance, list):
        return branch.get("type") == "array"
    if not isinstance(instance, dict) or branch.get("type") not in (None, "object"):
        return False
    required = branch.get("required", [])
    return all(instance.get(k) == v for k, v in branch_consts(branch).items()) and all(
        k in instance for k in required
    )


def branch_consts(branch: dict) -> dict:
    """The keys a union branch fixes with `const` (`source: jsonl`) and their values."""
    return {
        key: spec["const"]
        for key, spec in branch.get("properties", {}).items()
        if isinstance(spec, dict) and "const" in spec
    }


def _nodes(instance: Any, schema: dict, root: dict) -> Iterator[tuple[Any, dict]]:
    """(value, schema) of every value of `instance`, each before its children, through the union
    branch it matches, allOf parts, items and properties. The caller may change the children of
    the node it was given: they are read after it returns."""
    schema = resolve(schema, root)
    yield instance, schema
    for union in ("oneOf", "anyOf"):
        branches = [b for b in schema.get(union, []) if _branch_matches(b, instance, root)]
        if len(branches) == 1:  # validation rejects anything else
            yield from _nodes(instance, branches[0], root)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            yield from _nodes(item, schema["items"], root)
    if not isinstance(instance, dict):
        return
    for part in schema.get("allOf", []):
        yield from _nodes(instance, part, root)
    properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
    for key in list(instance):
        spec = properties.get(key, extra)
        if isinstance(spec, dict):
            yield from _nodes(instance[key], spec, root)


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """`instance` with every missing key that has a `default` in `schema` filled in, in place."""
    root = schema if root is None else root
    for node, spec in _nodes(instance, schema, root):
        if isinstance(node, dict):
            for key, prop in spec.get("properties", {}).items():
                prop = resolve(prop, root)
                if key not in node and "default" in prop:
                    node[key] = copy.deepcopy(prop["default"])
    return instance


def _number(value: Any, schema: dict) -> Any:
    if not (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        return value
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types or []
    number = float(value)
    if "number" in types:
        return number
    if "integer" in types and number.is_integer():
        return int(number)
    return value


def read_numbers(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """Strings written as numbers read as numbers where the schema wants one, in place: PyYAML
    (YAML 1.1) reads `1e-7` and `1e5` as strings, as it takes a float only with a dot."""
    root = schema if root is None else root
    for node, spec in _nodes(instance, schema, root):
        if isinstance(node, dict):
            properties, extra = spec.get("properties", {}), spec.get("additionalProperties")
            for key, value in node.items():
                prop = properties.get(key, extra)
                if isinstance(prop, dict):
                    node[key] = _number(value, resolve(prop, root))
        elif isinstance(node, list) and isinstance(spec.get("items"), dict):
            node[:] = [_number(value, resolve(spec["items"], root)) for value in node]
    return instance


def canonical(value: Any) -> Any:
    """The same values, written one way: dict keys sorted at every level and integral floats as
    ints. Snakemake compares params by their repr, so without this a config with its keys in
    another order (a merged file, a `--config` override) or `6.0` for `6` would re-run jobs."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
