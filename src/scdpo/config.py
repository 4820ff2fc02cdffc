"""Config defaults live in one place, `config/schema.yaml`; this fills them into a config.

Snakemake's `validate` fills the defaults of plain objects but not of the branches of a `oneOf`
(a problem source is synthetic, jsonl or hf; a model is scratch or hf), whose defaults would leak
into the wrong branch. Here a branch is chosen by its `const` properties (`source: jsonl`) and only
its defaults are filled, so every block the rules pass to the package is complete: the code reads
keys, never defaults of its own, and a changed default is a changed param (it re-runs the jobs).

Standard library only: `rules/common.smk` imports this at parse time.
"""

from __future__ import annotations

import copy
from typing import Any


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        path = schema["$ref"].removeprefix("#/").split("/")
        target: Any = root
        for part in path:
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branch_matches(branch: dict, instance: Any, root: dict) -> bool:
    """Whether `instance` belongs to this branch of a union, judged by type, consts, required."""
    branch = _resolve(branch, root)
    if isinstance(instance, list):
        return branch.get("type") == "array"
    if not isinstance(instance, dict) or branch.get("type") not in (None, "object"):
        return False
    consts = {
        key: spec["const"]
        for key, spec in branch.get("properties", {}).items()
        if isinstance(spec, dict) and "const" in spec
    }
    required = branch.get("required", [])
    return all(instance.get(k) == v for k, v in consts.items()) and all(
        k in instance for k in required
    )


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """`instance` with every missing key that has a `default` in `schema` filled in, in place."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    for union in ("oneOf", "anyOf"):
        branches = [b for b in schema.get(union, []) if _branch_matches(b, instance, root)]
        if len(branches) == 1:  # validation has rejected anything else
            fill_defaults(instance, branches[0], root)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"], root)
    if not isinstance(instance, dict):
        return instance
    for part in schema.get("allOf", []):
        fill_defaults(instance, part, root)
    for key, spec in schema.get("properties", {}).items():
        spec = _resolve(spec, root)
        if key not in instance and "default" in spec:
            instance[key] = copy.deepcopy(spec["default"])
        if key in instance:
            fill_defaults(instance[key], spec, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                fill_defaults(value, extra, root)
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
