"""The version of the package code a rule runs, for its `code=` param.

Snakemake's code trigger sees a rule's shell command and its script file (by mtime), not the
package the script imports: an edit of `scdpo/pairs.py` would re-run nothing. `code_version(entry)`
is a sha256 over the entry file (a workflow script, or the training CLI a shell rule runs) and
every module of the package it imports, transitively: `import scdpo.x`, `from scdpo.x import y`
(and `y` when it is a module), relative imports, imports inside functions; importing `scdpo.x.y`
also runs the `__init__` of `scdpo` and `scdpo.x`. Two kinds of module run without an import
statement and count too: a string naming a module of the package (`python -m scdpo.grading._worker`)
and a subpackage's private modules (`_name.py`), which count with any module of their subpackage
(the sandbox worker is its `_*.py` files, concatenated and run by `python -c`).

Each file counts by its syntax tree with docstrings removed, written without line numbers: a
comment, a docstring or reformatting re-runs nothing; any change of code does. The tree's text
leaves out empty fields, so a newer Python's new (empty) fields do not change it.

Parsed trees are cached by file stat like fingerprints (scdpo.fingerprint): a Snakemake start
stats the package's files and parses none that did not change. Standard library only:
`rules/params.smk` imports this at parse time.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from scdpo.fingerprint import Cache, default_cache

PACKAGE = "scdpo"
# The cache's kind: a new one when what _parse stores changes.
CACHE_KIND = "code-v1"


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _text(node: object) -> str:
    """The tree as text: node types and non-empty fields, no positions."""
    if isinstance(node, ast.AST):
        fields = [
            f"{name}={_text(value)}"
            for name, value in ast.iter_fields(node)
            if value is not None and value != []
        ]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_text(item) for item in node) + "]"
    return repr(node)


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names a file imports or names in a string (candidates: the caller keeps the
    package's modules)."""
    found = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] if node.level <= len(here) else []
                base = ".".join([*base, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith(PACKAGE + ".") and node.value.isascii():
                found.add(node.value)
    return sorted(name for name in found if name == PACKAGE or name.startswith(PACKAGE + "."))


def _parse(path: str, module: str, is_package: bool) -> dict:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    imports = _imports(tree, module, is_package)
    digest = hashlib.sha256(_text(_without_docstrings(tree)).encode()).hexdigest()
    return {"digest": digest, "imports": imports}


class _Package:
    """The modules of the package below `src`, by name."""

    def __init__(self, src: Path) -> None:
        self.files: dict[str, Path] = {}
        root = src / PACKAGE
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(src).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            self.files[name] = path

    def is_package(self, name: str) -> bool:
        return self.files[name].name == "__init__.py"

    def with_parents(self, name: str) -> list[str]:
        """A module and the packages whose __init__ importing it runs."""
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]

    def private_siblings(self, name: str) -> list[str]:
        """The private modules of the subpackage `name` belongs to (or is)."""
        package = name if self.is_package(name) else name.rsplit(".", 1)[0]
        if package == PACKAGE:
            return []
        prefix = package + "."
        return [
            other
            for other in self.files
            if other.startswith(prefix)
            and "." not in other[len(prefix) :]
            and other[len(prefix) :].startswith("_")
            and not other[len(prefix) :].startswith("__")  # __main__: `python -m`, not the rule
        ]


def modules_of(entry: str | Path, src: str | Path, cache: Cache | None = None) -> dict[str, str]:
    """{module or entry file: digest} of the entry and every package module it runs."""
    cache = cache if cache is not None else default_cache()
    package = _Package(Path(src))

    def parsed(path: Path, module: str, is_package: bool) -> dict:
        return cache.cached(CACHE_KIND, path, lambda p: _parse(p, module, is_package))

    entry = Path(entry)
    first = parsed(entry, "__main__", False)
    digests = {entry.name: first["digest"]}
    queue = list(first["imports"])
    while queue:
        name = queue.pop()
        while name not in package.files and "." in name:
            name = name.rsplit(".", 1)[0]  # from scdpo.x import function: the module scdpo.x
        if name not in package.files or name in digests:
            continue
        for module in [*package.with_parents(name), *package.private_siblings(name)]:
            if module in digests or module not in package.files:
                continue
            info = parsed(package.files[module], module, package.is_package(module))
            digests[module] = info["digest"]
            queue += info["imports"]
    return dict(sorted(digests.items()))


def code_version(entry: str | Path, src: str | Path, cache: Cache | None = None) -> str:
    """`sha256:<hex>` over the entry and the package modules it runs (modules_of)."""
    lines = "".join(f"{name}\0{digest}\n" for name, digest in modules_of(entry, src, cache).items())
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
