"""Checks of the config before any job runs, with errors a user can act on.

`check_config` replaces Snakemake's `validate`, whose errors dump the schema (200 to 2,000 lines)
and, inside a `oneOf`, never name the bad key. Here numbers PyYAML reads as strings (`1e-7`) are
read as numbers where the schema wants one (scdpo.config.read_numbers); each error is a line that
names the config file, the key path and the fix (inside a `oneOf`, also the branch the block
matches best: the one whose `const` keys it has, else the one that knows most of its keys); and the
local files and directories the config names (jsonl sources, local datasets and models, a
launcher's `--config_file`) must exist, so a missing one fails the parse, not a job hours later.
`SCDPO_CONFIG_DEBUG=1` adds jsonschema's own errors, schema included.

PyYAML and jsonschema (Snakemake's own dependencies) and the standard library: `rules/common.smk`
imports this at parse time.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
from typing import Any

from scdpo.config import branch_consts, read_numbers, resolve

DEBUG_ENV = "SCDPO_CONFIG_DEBUG"
MAX_LISTED = 12  # errors listed, at most
# What the Hugging Face hub takes for a repository id; anything else can only be a local path.
_HUB_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


class ConfigError(ValueError):
    """An invalid config; the message names the config file, the key path and the fix."""


class _Sources:
    """The config files in merge order, then the `--config` overrides: which one set a key."""

    def __init__(self, files: list[str], overrides: dict | None) -> None:
        self.files, self.overrides, self._loaded = [str(f) for f in files], overrides or {}, None

    def several(self) -> bool:
        return len(self.files) + bool(self.overrides) > 1

    def at(self, path: tuple) -> str:
        """`file: key.path`, or the key path alone when the config has one source."""
        return f"{self.of(path)}: {key_path(path)}" if self.several() else key_path(path)

    def names(self) -> str:
        shown = [self.show(f) for f in self.files] + (["--config"] if self.overrides else [])
        return ", ".join(shown) or "the config"

    @staticmethod
    def show(path: str) -> str:
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    def of(self, path: tuple) -> str:
        """The last source that sets the longest prefix of `path`."""
        if self._loaded is None:
            import yaml

            self._loaded = []
            for file in self.files:
                try:
                    with open(file, encoding="utf-8") as handle:
                        self._loaded.append((self.show(file), yaml.safe_load(handle) or {}))
                except (OSError, yaml.YAMLError):
                    self._loaded.append((self.show(file), {}))
            self._loaded.append(("--config", self.overrides))
        best, depth = self.names(), -1
        for name, data in self._loaded:
            reached, value = 0, data
            for part in path:
                if isinstance(value, dict) and part in value:
                    value = value[part]
                elif isinstance(value, list) and isinstance(part, int) and part < len(value):
                    value = value[part]
                else:
                    break
                reached += 1
            if reached >= depth and (reached or data):
                best, depth = name, reached
        return best


def key_path(path: tuple | list) -> str:
    """experiments.tiny.data.dpo[1].path"""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(top level)"


def did_you_mean(word: object, choices: list) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _label(raw: dict, branch: dict) -> str:
    consts = branch_consts(branch)
    if consts:
        return ", ".join(f"{k}: {_yaml(v)}" for k, v in consts.items())
    if "$ref" in raw:
        return raw["$ref"].rsplit("/", 1)[-1]
    if "enum" in branch:
        return "one of " + ", ".join(map(str, branch["enum"]))
    if branch.get("type") == "object":
        return "{" + ", ".join(branch.get("required", [])) + "}"
    return "a list" if branch.get("type") == "array" else str(branch.get("type", "a value"))


def _yaml(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "number": (int, float),
    "integer": int,
}


def _type_fits(branch: dict, instance: object, root: dict) -> bool:
    """Whether the instance has a JSON type the branch (or a branch under it) takes."""
    if "type" in branch:
        types = branch["type"] if isinstance(branch["type"], list) else [branch["type"]]
        fits = any(isinstance(instance, _TYPES[t]) for t in types)
        return fits and not (isinstance(instance, bool) and "boolean" not in types)
    if "enum" in branch or "const" in branch:
        values = branch.get("enum", [branch.get("const")])
        return any(type(v) is type(instance) for v in values)
    unions = branch.get("oneOf", []) + branch.get("anyOf", [])
    return not unions or any(_type_fits(resolve(b, root), instance, root) for b in unions)


def _keys(branch: dict, root: dict) -> set:
    """Every key a branch (or any branch under it) takes."""
    keys = set(branch.get("properties", {}))
    for sub in branch.get("oneOf", []) + branch.get("anyOf", []) + branch.get("allOf", []):
        keys |= _keys(resolve(sub, root), root)
    return keys


def _explain_union(error: Any, root: dict, chain: str) -> list[tuple]:
    instance, path = error.instance, tuple(error.absolute_path)
    raws = error.validator_value
    branches = [resolve(b, root) for b in raws]
    if not error.context:
        labels = "; ".join(_label(r, b) for r, b in zip(raws, branches, strict=True))
        return [(path, f"matches more than one of: {labels}; make it match one", chain)]
    tags = {frozenset(branch_consts(b)) for b in branches}
    if isinstance(instance, dict) and len(tags) == 1 and (tag := next(iter(tags))):
        key = sorted(tag)[0]  # the discriminator, e.g. `source`
        allowed = [b["properties"][key]["const"] for b in branches]
        if instance.get(key) not in allowed:
            text = f"must be one of {', '.join(map(str, allowed))}"
            if key in instance:
                text = f"{instance[key]!r} is not one of {', '.join(map(str, allowed))}"
                text += did_you_mean(instance[key], allowed)
            return [((*path, key), text, chain)]
    by_branch: dict[int, list] = {}
    for sub in error.context:
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)

    def distance(index: int) -> tuple:
        """Lower is better: the branch's consts, the value's type, keys it knows, errors."""
        errors, consts = by_branch.get(index, []), branch_consts(branches[index])
        other_tag = bool(consts) and not (
            isinstance(instance, dict) and all(instance.get(k) == v for k, v in consts.items())
        )
        mismatch = not _type_fits(branches[index], instance, root)
        known = (
            len(set(instance) & _keys(branches[index], root)) if isinstance(instance, dict) else 0
        )
        return (other_tag, mismatch, -known, len(errors))

    best = min(by_branch, key=distance)
    label = _label(raws[best], branches[best])
    chain = f"{chain} > {label}" if chain else label
    return [item for sub in by_branch[best] for item in _explain(sub, root, chain)]


def _explain(error: Any, root: dict, chain: str = "") -> list[tuple]:
    """(key path, what is wrong and the fix, union branch) for one jsonschema error."""
    if error.validator in ("oneOf", "anyOf"):
        return _explain_union(error, root, chain)
    path, instance, schema = tuple(error.absolute_path), error.instance, error.schema
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        return [
            (
                (*path, key),
                "unknown key" + (did_you_mean(key, known) or f"; keys here: {', '.join(known)}"),
                chain,
            )
            for key in instance
            if key not in known
        ]
    if error.validator == "required" and isinstance(instance, dict):
        properties = schema.get("properties", {})
        return [
            ((*path, key), "missing" + _about(resolve(properties.get(key, {}), root)), chain)
            for key in error.validator_value
            if key not in instance
        ]
    if error.validator == "type":
        wanted = error.validator_value
        article = "an" if str(wanted)[0] in "aeiou" else "a"
        text = f"{instance!r} is not {article} {wanted}"
        if wanted == "integer" and isinstance(instance, str | float):
            text += " (write a whole number, e.g. 100000, not 1e5 or 1.5)"
        return [(path, text + _about(schema), chain)]
    if error.validator == "enum":
        text = f"{instance!r} is not one of {', '.join(map(str, error.validator_value))}"
        return [(path, text + did_you_mean(instance, error.validator_value), chain)]
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return [(path, message + _about(schema), chain)]


def _about(schema: dict) -> str:
    description = schema.get("description", "") if isinstance(schema, dict) else ""
    return f" ({description.strip()})" if description else ""


def _schema_errors(config: dict, schema: dict) -> list:
    from jsonschema.validators import validator_for

    validator = validator_for(schema)(schema)
    return sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])


def check_config(
    config: dict,
    schema: dict,
    files: list[str] = (),
    overrides: dict | None = None,
    trainer_args: bool = False,
) -> None:
    """Validate `config` (merged from `files`, then `overrides`) in place against `schema`, after
    reading numbers written as strings; then check that its local paths exist. A ConfigError
    names the config file, the key path and the fix of each problem. With `trainer_args`, the
    recipes' `trainer_args` names are checked against TRL's config classes where TRL imports."""
    sources = _Sources(list(files), overrides)
    read_numbers(config, schema)
    errors = _schema_errors(config, schema)
    if errors:
        problems = list(dict.fromkeys(p for e in errors for p in _explain(e, schema)))
        # A misspelt key is also a missing one: name it once, as the unknown key.
        meant = {
            (*path[:-1], match[1])
            for path, text, _ in problems
            if (match := re.search(r"^unknown key; did you mean '(.+)'", text))
        }
        problems = [p for p in problems if not (p[1].startswith("missing") and p[0] in meant)]
        lines = []
        for path, text, chain in problems[:MAX_LISTED]:
            lines.append(f"  {sources.at(path)}: {text}")
            if chain:
                lines.append(f"    (the block matches this branch of its oneOf best: {chain})")
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
        head = f"invalid config ({sources.names()}); nothing has run:"
        tail = "Every key is described in config/schema.yaml."
        if os.environ.get(DEBUG_ENV):
            tail += "\n\n" + "\n\n".join(str(e) for e in errors)
        else:
            tail += f" jsonschema's full errors, with the schema: {DEBUG_ENV}=1 snakemake ..."
        raise ConfigError("\n".join([head, *lines, tail]))
    wrong = cross_reference_errors(config)
    if trainer_args:
        from scdpo.trainer_args import config_errors

        wrong += config_errors(config)
    if wrong:
        lines = [f"  {sources.at(path)}: {text}" for path, text in wrong]
        head = f"invalid config ({sources.names()}); nothing has run:"
        raise ConfigError("\n".join([head, *lines]))
    missing = [(key, path) for key, path, kind in local_paths(config) if not _exists(path, kind)]
    if missing:
        raise ConfigError(_missing_message(missing, sources))


def cross_reference_errors(config: dict) -> list[tuple[tuple, str]]:
    """(key path, problem) of every name that must be another key of a valid config: the
    experiments' benchmarks, the pilot's experiments and benchmarks; and seeds of an SFT recipe
    (only DPO trainings repeat per seed)."""
    benchmarks, experiments = config["benchmarks"], config["experiments"]
    wrong = []
    for name, spec in experiments.items():
        for i, benchmark in enumerate(spec["benchmarks"]):
            if benchmark not in benchmarks:
                text = f"'{benchmark}' is not a key of the top-level 'benchmarks'"
                wrong.append((("experiments", name, "benchmarks", i), text))
        if "seeds" in spec["sft"]:
            text = "seeds repeat DPO trainings only (dpo.seeds)"
            wrong.append((("experiments", name, "sft", "seeds"), text))
    pilot = config.get("report", {}).get("pilot", {})
    for key, names in (("experiments", experiments), ("benchmarks", benchmarks)):
        for i, name in enumerate(pilot.get(key, [])):
            if name not in names:
                text = f"'{name}' is not a key of the top-level '{key}'"
                wrong.append((("report", "pilot", key, i), text))
    return wrong


# --- local paths ----------------------------------------------------------------------------------


def _is_local(name: str) -> bool:
    """A model or dataset name that can only be a local path (not a hub id)."""
    return name.startswith(("/", ".", "~", "resources/")) or not _HUB_ID.fullmatch(name)


def _source_paths(key: tuple, source: dict) -> list[tuple[tuple, str, str]]:
    if source.get("source") == "jsonl":
        return [((*key, "path"), source["path"], "file")]
    if source.get("source") == "hf" and _is_local(source["id"]):
        return [((*key, "id"), source["id"], "directory")]
    return []


def _launcher_paths(key: tuple, launcher: str) -> list[tuple[tuple, str, str]]:
    words = shlex.split(launcher)
    found = []
    for i, word in enumerate(words):
        if word == "--config_file" and i + 1 < len(words):
            found.append((key, words[i + 1], "file"))
        elif word.startswith("--config_file="):
            found.append((key, word.split("=", 1)[1], "file"))
    return found


def local_paths(config: dict) -> list[tuple[tuple, str, str]]:
    """(key path, path, "file" or "directory") of every local path a valid config names: jsonl
    sources, local dataset and model directories (names that cannot be hub ids, or under
    resources/), files a training launcher reads."""
    found = []
    for name, spec in config["experiments"].items():
        base = ("experiments", name)
        model = spec["model"]
        if model["source"] == "hf" and _is_local(model["name_or_path"]):
            found.append(((*base, "model", "name_or_path"), model["name_or_path"], "directory"))
        found += _source_paths((*base, "data", "sft"), spec["data"]["sft"])
        dpo = spec["data"]["dpo"]
        for i, source in enumerate(dpo if isinstance(dpo, list) else [dpo]):
            key = (*base, "data", "dpo", *([i] if isinstance(dpo, list) else []))
            found += _source_paths(key, source)
        for stage in ("sft", "dpo"):
            if "launcher" in spec[stage]:
                found += _launcher_paths((*base, stage, "launcher"), spec[stage]["launcher"])
    for name, source in config["benchmarks"].items():
        found += _source_paths(("benchmarks", name), source)
    return found


def _exists(path: str, kind: str) -> bool:
    return os.path.isfile(path) if kind == "file" else os.path.isdir(path)


def _missing_message(missing: list[tuple[tuple, str]], sources: _Sources) -> str:
    keys: dict[str, list[tuple]] = {}
    for key, path in missing:
        keys.setdefault(path, []).append(key)
    lines = [
        f"{len(keys)} local path(s) named in the config ({sources.names()}) do not exist "
        f"(relative ones from {os.getcwd()}); nothing has run:"
    ]
    for path, where in keys.items():
        more = f" and {len(where) - 1} more" if len(where) > 1 else ""
        lines.append(f"  {path}  ({sources.at(where[0])}{more})")
    lines.append(
        "Create them (README.md, 'Files under resources/'), or point these keys at existing files "
        "and directories."
    )
    return "\n".join(lines)
