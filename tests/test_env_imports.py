"""Every rule's code imports only packages that its conda env declares.

Derived at test time from rules/*.smk and the source tree, so it follows the package as it is
reorganised. For each rule: its env (`conda:`), its code (the `script:` file; for a shell rule the
Python file or console script its command runs), then a static (AST) walk of what running that
code imports: every module-level import of each module reached, and the imports inside the
functions and classes the entry point reaches through `scdpo.*` names. Each third-party top-level
module maps to its distribution (importlib.metadata of the project venv, else the module's own
name) and must be pinned in the env's pip list. Imports under `if TYPE_CHECKING:` or guarded by
`except ImportError` do not count.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STDLIB = set(sys.stdlib_module_names)
# Module-level lists of module names that the sandbox worker imports with __import__.
DYNAMIC_IMPORT_LISTS = {"PREIMPORT"}
# Methods whose library imports an optional package when called: pandas' to_markdown -> tabulate.
LAZY_IMPORTS = {"to_markdown": "tabulate"}


def normalize(name: str) -> str:
    """PEP 503 name: 'PyYAML' and 'pyyaml', 'math_verify' and 'math-verify' compare equal."""
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()


# --- rules ----------------------------------------------------------------------------------------


@dataclass
class Rule:
    name: str
    env: Path | None  # None: no conda: directive (tests/test_envs.py fails on it too)
    entries: list[Path] = field(default_factory=list)  # Python files
    entry_modules: list[str] = field(default_factory=list)  # console scripts' modules


def _section(block: str, key: str) -> str | None:
    """The indented body of `key:` in a rule block (up to the next directive)."""
    match = re.search(rf"^    {key}:(.*?)(?=^    \w+:|\Z)", block, flags=re.M | re.S)
    return match.group(1) if match else None


def _definitions(smk_text: str) -> dict[str, str]:
    """Top-level `NAME = ...` statements of the .smk files (up to the next unindented line)."""
    pattern = r"^([A-Za-z_]\w*)\s*=(.*?)(?=^\S|\Z)"
    return {m.group(1): m.group(2) for m in re.finditer(pattern, smk_text, flags=re.M | re.S)}


def _console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {name: target.split(":")[0] for name, target in project.get("scripts", {}).items()}


def _shell_entries(rule: Rule, block: str, shell: str, definitions: dict[str, str]) -> None:
    """Python files and console scripts a shell command runs, through `{params.x}` too."""
    texts = [shell]
    params = _section(block, "params") or ""
    for name in re.findall(r"\{params\.(\w+)\}", shell):
        value = re.search(rf"^\s+{name}\s*=\s*(.+?),?\s*$", params, flags=re.M)
        if value:
            texts.append(value.group(1))
            texts += [
                definitions[w] for w in re.findall(r"\w+", value.group(1)) if w in definitions
            ]
    for text in texts:
        literals = re.findall(r"\"([^\"]*)\"|'([^']*)'", text)
        parts = [a or b for a, b in literals]
        # os.path.join("workflow_scripts", "train.py") and plain "workflow_scripts/train.py".
        for candidate in [*parts, "/".join(parts), *re.findall(r"[\w./-]+\.py\b", text)]:
            path = REPO / candidate
            if candidate.endswith(".py") and path.is_file() and path not in rule.entries:
                rule.entries.append(path)
        for word in re.findall(r"[\w-]+", text):
            if word in _console_scripts():
                rule.entry_modules.append(_console_scripts()[word])


def parse_rules() -> list[Rule]:
    smks = sorted((REPO / "rules").glob("*.smk"))
    definitions = {k: v for smk in smks for k, v in _definitions(smk.read_text()).items()}
    rules = []
    for smk in smks:
        for block in re.split(r"^(?=(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.M)[1:]:
            name = re.match(r"\w+ (\w+):", block).group(1)
            conda = re.search(r'^    conda:\s*\n\s*"([^"]+)"', block, flags=re.M)
            rule = Rule(name, (smk.parent / conda.group(1)).resolve() if conda else None)
            script = re.search(r'^    script:\s*\n\s*"([^"]+)"', block, flags=re.M)
            shell = _section(block, "shell")
            if script:
                rule.entries.append((smk.parent / script.group(1)).resolve())
            elif shell:
                _shell_entries(rule, block, shell, definitions)
            rules.append(rule)
    return rules


# --- static import walk ---------------------------------------------------------------------------

Node = tuple[str, str | None]  # (module, top-level name in it) or (module, None): the module runs


@dataclass
class Scope:
    """What one body (a module's top level, a function, a class) imports and refers to."""

    imports: list[tuple[str, int]] = field(default_factory=list)  # (absolute module, line)
    bindings: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    attributes: set[tuple[str, str]] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)  # every attribute name, for LAZY_IMPORTS


@dataclass
class Module:
    name: str
    path: Path
    top: Scope
    defs: dict[str, Scope]
    dynamic: list[str]  # names in a DYNAMIC_IMPORT_LISTS constant


def _guarded(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` bodies and `try: ... except ImportError:` are not hard imports."""
    if isinstance(node, ast.If):
        return "TYPE_CHECKING" in ast.unparse(node.test)
    if isinstance(node, ast.Try):
        return any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers
        )
    return False


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, skip_defs: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.skip_defs = skip_defs
        self.scope = Scope()

    def generic_visit(self, node: ast.AST) -> None:
        if _guarded(node):
            return
        if self.skip_defs and isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
        ):
            self.visit_decorations(node)
            return
        super().generic_visit(node)

    def visit_decorations(self, node: ast.AST) -> None:
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)

    def _absolute(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = self.package.split(".")
        base = base[: len(base) - level + 1]
        return ".".join([*base, module] if module else base)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.scope.imports.append((alias.name, node.lineno))
            if alias.asname:
                self.scope.bindings[alias.asname] = (alias.name, None)
            else:
                top = alias.name.split(".")[0]
                self.scope.bindings[top] = (top, None)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self._absolute(node.module, node.level)
        self.scope.imports.append((module, node.lineno))
        for alias in node.names:
            self.scope.bindings[alias.asname or alias.name] = (module, alias.name)

    def visit_Name(self, node: ast.Name) -> None:
        self.scope.names.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.scope.methods.add(node.attr)
        if isinstance(node.value, ast.Name):
            self.scope.attributes.add((node.value.id, node.attr))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.scope.strings.add(node.value)


def _collect(tree: ast.AST, module: str, is_package: bool, skip_defs: bool) -> Scope:
    """A module's top level (skip_defs: bodies of its functions and classes left out) or a def."""
    collector = _Collector(module, is_package, skip_defs)
    for child in ast.iter_child_nodes(tree) if skip_defs else [tree]:
        collector.visit(child)
    return collector.scope


class ImportGraph:
    """Local modules are files under `roots`; every other non-stdlib import is third-party."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.modules: dict[str, Module | None] = {}

    def find(self, name: str) -> Path | None:
        for root in self.roots:
            base = root.joinpath(*name.split("."))
            for path in (base.with_suffix(".py"), base / "__init__.py"):
                if name and path.is_file():
                    return path
        return None

    def module(self, name: str) -> Module | None:
        if name not in self.modules:
            path = self.find(name)
            self.modules[name] = self._parse(name, path) if path else None
        return self.modules[name]

    def _parse(self, name: str, path: Path) -> Module:
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        defs, dynamic = {}, []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defs[node.name] = _collect(node, name, is_package, skip_defs=False)
            targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
            if any(getattr(t, "id", None) in DYNAMIC_IMPORT_LISTS for t in targets):
                values = node.value if isinstance(node.value, ast.List | ast.Tuple) else None
                dynamic += [e.value for e in getattr(values, "elts", []) if _is_str(e)]
        return Module(name, path, _collect(tree, name, is_package, skip_defs=True), defs, dynamic)


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


@dataclass
class Found:
    """A third-party import: its top-level module, where it is and how the entry reaches it."""

    top: str
    where: str
    chain: list[str]


def third_party_imports(entry: Path | str, roots: list[Path]) -> list[Found]:
    """What running `entry` (a file, or a module name under `roots`) imports from outside."""
    graph = ImportGraph(roots)
    if isinstance(entry, Path):
        name = entry.stem
        graph.modules[name] = graph._parse(name, entry)
    else:
        name = entry
    found: list[Found] = []
    seen: set[Node] = set()
    parents: dict[Node, Node | None] = {(name, None): None}
    todo: list[Node] = [(name, None)]

    def chain(node: Node) -> list[str]:
        steps = []
        while node is not None:
            steps.append(node[0] + (f".{node[1]}" if node[1] else ""))
            node = parents[node]
        return steps[::-1]

    def reach(node: Node, parent: Node) -> None:
        if node not in seen and node not in parents:
            parents[node] = parent
            todo.append(node)

    def follow(binding: tuple[str, str | None], parent: Node) -> None:
        module, attr = binding
        if attr and graph.module(f"{module}.{attr}"):
            reach((f"{module}.{attr}", None), parent)
        elif graph.module(module):
            reach((module, attr), parent)

    def walk(scope: Scope, module: Module, node: Node) -> None:
        for imported, line in scope.imports:
            top = imported.split(".")[0]
            if graph.module(top) or graph.module(imported):
                parts = imported.split(".")
                for i in range(1, len(parts) + 1):  # a.b.c runs a, a.b and a.b.c
                    if graph.module(".".join(parts[:i])):
                        reach((".".join(parts[:i]), None), node)
            elif top not in STDLIB:
                where = f"{_shown(module.path)}:{line}"
                found.append(Found(top, where, chain(node)))
        for method in scope.methods & LAZY_IMPORTS.keys():
            where = f"{_shown(module.path)} (.{method}() imports it)"
            found.append(Found(LAZY_IMPORTS[method], where, chain(node)))
        bindings = {**module.top.bindings, **scope.bindings}
        for name in scope.names:
            if name in bindings:
                follow(bindings[name], node)
            elif name in module.defs:
                reach((module.name, name), node)
        for base, attr in scope.attributes:
            target = bindings.get(base)
            if target and graph.module(".".join(filter(None, target))):
                follow((".".join(filter(None, target)), attr), node)
        for string in scope.strings:  # `python -m scdpo.x` runs module scdpo.x
            if re.fullmatch(r"[A-Za-z_][\w.]*", string) and "." in string and graph.module(string):
                reach((string, None), node)

    while todo:
        node = todo.pop()
        seen.add(node)
        module = graph.module(node[0])
        if module is None:
            continue
        name, symbol = node
        if symbol is None:
            parent = name.rpartition(".")[0]
            if parent:
                reach((parent, None), node)
            walk(module.top, module, node)
            for dynamic in module.dynamic:
                if dynamic.split(".")[0] not in STDLIB:
                    where = f"{_shown(module.path)} (imported by name)"
                    found.append(Found(dynamic.split(".")[0], where, chain(node)))
        elif symbol in module.defs:
            reach((name, None), node)
            walk(module.defs[symbol], module, node)
        elif symbol in module.top.bindings:  # a re-export: from x import f in __init__.py
            follow(module.top.bindings[symbol], node)
    return found


# --- distributions --------------------------------------------------------------------------------


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(top: str) -> set[str]:
    """Distributions providing a top-level module (the venv's metadata, else the module name)."""
    dists = _installed().get(top)
    return {normalize(d) for d in dists} if dists else {normalize(top)}


def declared(env: Path) -> set[str]:
    spec = yaml.safe_load(env.read_text())
    pip = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d]
    return {normalize(re.split(r"[=<>!~ ;]", s)[0]) for group in pip for s in group}


# --- tests ----------------------------------------------------------------------------------------

RULES = parse_rules()


def test_rules_are_found_with_their_code():
    assert len(RULES) >= 10
    for rule in RULES:
        assert rule.env and rule.env.is_file(), f"rule {rule.name}: env {rule.env} not found"
        assert rule.entries or rule.entry_modules, f"rule {rule.name}: no script or CLI found"
    shell = [r for r in RULES if r.entries and r.entries[0].name == "train.py"]
    assert shell, "the shell training rules should resolve to workflow_scripts/train.py"


def missing_pins(rule: Rule, env: Path) -> dict[str, Found]:
    """Third-party modules the rule's code imports whose distribution `env` does not pin."""
    pinned = declared(env)
    missing: dict[str, Found] = {}
    for entry in [*rule.entries, *rule.entry_modules]:
        roots = [entry.parent, SRC] if isinstance(entry, Path) else [SRC]
        for found in third_party_imports(entry, roots):
            if not distribution(found.top) & pinned:
                missing.setdefault(found.top, found)
    return missing


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_imports_only_what_its_env_declares(rule):
    assert rule.env, f"rule {rule.name} has no conda: env"
    missing = missing_pins(rule, rule.env)
    assert not missing, f"rule {rule.name}: {rule.env.name} lacks " + "; ".join(
        f"{'/'.join(sorted(distribution(top)))} (import {top} at {f.where}, via "
        f"{' -> '.join(f.chain)})"
        for top, f in sorted(missing.items())
    )


def test_an_env_without_torch_fails_the_training_rules(tmp_path):
    """The check bites: train.yaml less torch is reported for each of its rules (shell, script)."""
    spec = yaml.safe_load((REPO / "envs" / "train.yaml").read_text())
    pip = next(d for d in spec["dependencies"] if isinstance(d, dict))
    pip["pip"] = [p for p in pip["pip"] if not p.startswith("torch==")]
    env = tmp_path / "train.yaml"
    env.write_text(yaml.safe_dump(spec))
    rules = [r for r in RULES if r.env and r.env.name == "train.yaml"]
    assert rules
    for rule in rules:
        assert "torch" in missing_pins(rule, env), rule.name


# --- the walker itself, on a small package --------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_walker_counts_module_level_and_reached_function_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.light import f\n",
            "pkg/light.py": (
                "import json\nimport yaml\n"
                "def f():\n    from .heavy import g\n    return g()\n"
                "def unused():\n    import notreached\n"
            ),
            "pkg/heavy.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import typed_only\n"
                "try:\n    import optional\nexcept ImportError:\n    optional = None\n"
                "def g():\n    import numpy\n    return Helper().run()\n"
                "class Helper:\n    def run(self):\n        import torch\n"
                "        from pkg.tables import table\n"
                "        return run_child('pkg.child'), table\n"
            ),
            "pkg/child.py": "import sympy\n",
            "pkg/tables.py": "def table(df):\n    return df.round(1).to_markdown()\n",
            "entry.py": "import pkg\npkg.f()\n",
        },
    )
    found = third_party_imports(root / "entry.py", [root])
    assert {f.top for f in found} == {"yaml", "numpy", "torch", "sympy", "tabulate"}
    torch = next(f for f in found if f.top == "torch")
    assert torch.chain == ["entry", "pkg.f", "pkg.light.f", "pkg.heavy.g", "pkg.heavy.Helper"]


def test_walker_does_not_follow_functions_the_entry_never_names(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/mod.py": "def light():\n    return 1\ndef heavy():\n    import torch\n",
            "entry.py": "from pkg.mod import light\nlight()\n",
        },
    )
    assert third_party_imports(root / "entry.py", [root]) == []


def test_distribution_names_come_from_metadata():
    assert distribution("yaml") == {"pyyaml"}
    assert distribution("math_verify") == {"math-verify"}
    assert distribution("not_installed_anywhere") == {"not-installed-anywhere"}
