"""The package's floors: data flows one way, from the ground floor up to the method's stages.

Ground floor (0): facts and tools that know nothing of the method's stages. Floor 1: problems,
models, pairs, labels, the generation engine and the result tables. Floor 2: the stages that
run the engine or train (sampling, step control, evaluation, training, credit scoring). A module
may import its own floor or lower, never higher; every import counts, also inside functions.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "scdpo"

FLOORS = {
    0: [
        "names",
        "cpu",
        "gpu",
        "config",
        "config_check",
        "trainer_args",
        "fingerprint",
        "code_version",
        "hub",
        "loading",
        "protobuf",
        "spm",
        "tokens",
        "jsonl",
        "solution",
        "sandbox",
        "grading",
        "results",
        "results.stats",
    ],
    1: [
        "problems",
        "modeling",
        "convert",
        "pairs",
        "labels",
        "generation",
        "results.render",
        "results.accuracy",
        "results.pilot",
        "results.data_stats",
        "results.data_scale",
        "results.cost",
        "results.plan",
    ],
    2: [
        "sampling",
        "step_control",
        "evaluate",
        "train",
        "results.credit",
        "results.credit_pages",
    ],
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    """The floor of `scdpo.x.y`: the longest registered prefix decides."""
    name = module.removeprefix("scdpo").removeprefix(".")
    best = None
    for level, prefixes in FLOORS.items():
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (level, prefix)
    if best is None:
        raise KeyError(f"{module} has no floor: add it to FLOORS")
    return best[0]


def imports(path: Path) -> set[str]:
    """Every module the file imports (absolute names), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def own_imports(path: Path) -> set[str]:
    """The package modules a file imports (`from scdpo.x import name` counts as scdpo.x)."""
    own = set()
    for name in imports(path):
        parts = name.split(".")
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        if len(parts) > 1:
            own.add(".".join(parts))
    return own


@pytest.mark.parametrize("module", [m for m in MODULES if m != "scdpo"])
def test_module_imports_only_its_floor_or_lower(module: str):
    own = floor(module)
    higher = sorted(name for name in own_imports(MODULES[module]) if floor(name) > own)
    assert not higher, f"{module} (floor {own}) imports a higher floor: {higher}"


@pytest.mark.parametrize("module", list(MODULES))
def test_module_is_at_most_400_lines(module: str):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines"


def test_the_names_module_imports_only_the_standard_library():
    third_party = {name.split(".")[0] for name in imports(MODULES["scdpo.names"])} - set(
        sys.stdlib_module_names
    )
    assert not third_party - {"__future__"}


def test_the_floor_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from scdpo.sampling import SamplingTask\n")
    assert "scdpo.sampling" in own_imports(source)
    assert floor("scdpo.sampling") == 2 and floor("scdpo.results.stats") == 0
