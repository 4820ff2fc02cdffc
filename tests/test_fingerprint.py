"""Content fingerprints (scdpo.fingerprint) and code versions (scdpo.code_version): what changes
them and what does not, and that the stat cache hashes a file once."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from scdpo import fingerprint as fp
from scdpo.code_version import code_version, modules_of
from scdpo.fingerprint import Cache, fingerprint, local_content


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The files whose bytes are read to hash them."""
    read = []
    original = fp._sha256

    def sha256(path):
        read.append(os.path.basename(path))
        return original(path)

    monkeypatch.setattr(fp, "_sha256", sha256)
    return read


def test_a_touched_or_copied_file_keeps_its_fingerprint_and_an_edit_changes_it(tmp_path, counted):
    cache = Cache(tmp_path / "cache")
    data = tmp_path / "bench.jsonl"
    data.write_bytes(b'{"question": "1+1", "extra": {"answer": "2"}}\n' * 30_000)  # > 1 MB
    first = fingerprint(data, cache)
    assert first.startswith("sha256:") and data.stat().st_size > 1_000_000
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint(data, cache) == first
    copy = tmp_path / "copy.jsonl"
    shutil.copyfile(data, copy)
    os.replace(copy, data)  # another inode, new times: cp or rsync without -t
    assert fingerprint(data, cache) == first
    data.write_bytes(data.read_bytes()[:-47])  # one question fewer
    assert fingerprint(data, cache) != first


def test_an_unchanged_file_is_hashed_once_also_by_the_next_snakemake(tmp_path, counted):
    data = tmp_path / "model.safetensors"
    data.write_bytes(b"\0" * 4096)
    first = fingerprint(data, Cache(tmp_path / "cache"))
    # A new process: a new Cache object on the same folder reads the stored value.
    assert fingerprint(data, Cache(tmp_path / "cache")) == first
    assert counted == ["model.safetensors"]
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # hashed again, same value
    assert fingerprint(data, Cache(tmp_path / "cache")) == first
    assert counted == ["model.safetensors"] * 2


def test_a_folder_is_read_once_until_a_file_in_it_changes(tmp_path, counted):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("a.safetensors", "b.safetensors", "config.json"):
        (model / name).write_text(name)
    first = fingerprint(model, Cache(tmp_path / "cache"))
    assert sorted(counted) == ["a.safetensors", "b.safetensors", "config.json"]
    assert fingerprint(model, Cache(tmp_path / "cache")) == first
    assert len(counted) == 3
    (model / "config.json").write_text("{}")
    assert fingerprint(model, Cache(tmp_path / "cache")) != first
    assert len(counted) == 4 and counted[-1] == "config.json"


def test_a_folder_fingerprint_covers_names_and_contents_not_hidden_files(tmp_path):
    cache = Cache(None)
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\1\2\3")
    first = fingerprint(model, cache)
    assert fingerprint(model, cache) == first
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "download.metadata").write_text("etag, time")
    (model / "sub" / "__pycache__").mkdir()
    (model / "sub" / "__pycache__" / "x.pyc").write_bytes(b"x")
    assert fingerprint(model, cache) == first
    (model / "sub" / "weights.bin").rename(model / "sub" / "weights2.bin")
    renamed = fingerprint(model, cache)
    assert renamed != first
    (model / "sub" / "weights2.bin").write_bytes(b"\1\2\4")
    assert fingerprint(model, cache) not in (first, renamed)
    (model / "sub" / "weights2.bin").write_bytes(b"\1\2\3")
    (model / "tokenizer.json").write_text("{}")
    assert fingerprint(model, cache) not in (first, renamed)


def test_a_torn_or_foreign_cache_entry_is_computed_again(tmp_path):
    data = tmp_path / "a.jsonl"
    data.write_text("x\n")
    first = fingerprint(data, Cache(tmp_path / "cache"))
    for entry in (tmp_path / "cache").rglob("*.json"):
        entry.write_text('{"path": "/elsewhere", "ke')
    assert fingerprint(data, Cache(tmp_path / "cache")) == first
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_local_content_names_local_inputs_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bench.jsonl").write_text("x\n")
    Path("openai/gsm8k").mkdir(parents=True)  # a hub id with a local stand-in: read locally
    Path("openai/gsm8k/test.parquet").write_bytes(b"p")
    Path("zero3.yaml").write_text("num_processes: 2\n")
    assert fp.source_paths({"source": "jsonl", "path": "bench.jsonl"}) == ["bench.jsonl"]
    assert fp.source_paths({"source": "hf", "id": "openai/gsm8k"}) == ["openai/gsm8k"]
    assert fp.source_paths({"source": "hf", "id": "meta-math/MetaMathQA"}) == []
    assert fp.source_paths({"source": "synthetic", "n": 3}) == []
    assert fp.model_paths({"source": "hf", "name_or_path": "openai/gsm8k"}) == ["openai/gsm8k"]
    assert fp.model_paths({"source": "hf", "name_or_path": "mistralai/Mistral-7B-v0.1"}) == []
    assert fp.model_paths({"source": "scratch", "vocab_size": 10}) == []
    assert fp.launcher_paths("accelerate launch --config_file zero3.yaml") == ["zero3.yaml"]
    assert fp.launcher_paths("accelerate launch --config_file=zero3.yaml") == ["zero3.yaml"]
    assert fp.launcher_paths("python") == []
    content = local_content(["openai/gsm8k", "bench.jsonl"], Cache(None))
    assert list(content) == ["bench.jsonl", "openai/gsm8k"]
    assert all(value.startswith("sha256:") for value in content.values())
    assert local_content([], Cache(None)) == {}


# --- code versions -------------------------------------------------------------------------------


def _package(root: Path, modules: dict[str, str]) -> Path:
    """A package `scdpo` under root/src with these modules ({"a.py": source})."""
    for name, source in modules.items():
        path = root / "src" / "scdpo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root / "src"


@pytest.fixture
def package(tmp_path) -> tuple[Path, Path]:
    src = _package(
        tmp_path,
        {
            "__init__.py": '"""The package."""\n',
            "pairs.py": '''\
                """Pairs."""
                from scdpo.names import VARIANTS

                def build(x):
                    """Build."""
                    from scdpo.tokens import count  # imported inside a function
                    return count(x) + len(VARIANTS)
                ''',
            "names.py": "VARIANTS = ('dpo',)\n",
            "tokens.py": "def count(x):\n    return len(x)\n",
            "unrelated.py": "X = 1\n",
            "grading/__init__.py": "from ._pool import Pool\n",
            "grading/_pool.py": "class Pool: ...\n",
            "grading/_worker.py": "def main(): ...\n",
            "sandbox/__init__.py": "from .launch import run\n",
            "sandbox/launch.py": "PARTS = ('_cells',)\ndef run(): ...\n",
            "sandbox/_cells.py": "def cell(): ...\n",
            "uses.py": "import scdpo.grading\nfrom scdpo import sandbox\n",
            "runs.py": "COMMAND = ['python', '-m', 'scdpo.names']\n",
        },
    )
    entry = tmp_path / "scripts" / "pairs_build.py"
    entry.parent.mkdir()
    entry.write_text("from scdpo.pairs import build\nbuild('x')\n")
    return entry, src


def test_the_code_version_covers_the_modules_the_entry_imports(package):
    entry, src = package
    assert set(modules_of(entry, src, Cache(None))) == {
        "pairs_build.py",
        "scdpo",
        "scdpo.pairs",
        "scdpo.names",
        "scdpo.tokens",
    }
    uses = entry.with_name("uses.py")
    uses.write_text("import scdpo.uses\n")
    # A private module counts with its subpackage (grading's worker runs by `python -m`, the
    # sandbox worker is read from its files); so does a module named in a string (`python -m`).
    assert set(modules_of(uses, src, Cache(None))) == {
        "uses.py",
        "scdpo",
        "scdpo.uses",
        "scdpo.grading",
        "scdpo.grading._pool",
        "scdpo.grading._worker",
        "scdpo.sandbox",
        "scdpo.sandbox.launch",
        "scdpo.sandbox._cells",
    }
    uses.write_text("from scdpo.runs import COMMAND\n")
    assert set(modules_of(uses, src, Cache(None))) == {
        "uses.py",
        "scdpo",
        "scdpo.runs",
        "scdpo.names",
    }


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_code_change_changes_the_version_a_docstring_or_comment_does_not(package):
    entry, src = package
    first = code_version(entry, src, Cache(None))
    pairs = src / "scdpo" / "pairs.py"
    _edit(pairs, '"""Build."""', '"""Build the pairs, one variant at a time."""')
    _edit(pairs, "# imported inside a function", "# a comment")
    _edit(pairs, "return count(x)", "return  count( x )")
    (src / "scdpo" / "unrelated.py").write_text("X = 2\n")
    assert code_version(entry, src, Cache(None)) == first
    _edit(src / "scdpo" / "tokens.py", "len(x)", "len(x) + 1")  # imported inside a function
    second = code_version(entry, src, Cache(None))
    assert second != first
    _edit(pairs, "len(VARIANTS)", "len(VARIANTS) * 2")
    assert code_version(entry, src, Cache(None)) not in (first, second)


def test_the_code_version_does_not_depend_on_where_the_checkout_is(package, tmp_path):
    entry, src = package
    moved = tmp_path / "elsewhere"
    shutil.copytree(src.parent, moved)
    assert code_version(moved / "scripts" / entry.name, moved / "src", Cache(None)) == (
        code_version(entry, src, Cache(None))
    )


def test_the_code_version_is_cached_by_stat(package, tmp_path, monkeypatch):
    from scdpo import code_version as cv

    entry, src = package
    parsed = []
    original = cv._parse
    monkeypatch.setattr(cv, "_parse", lambda path, *a: parsed.append(path) or original(path, *a))
    first = code_version(entry, src, Cache(tmp_path / "cache"))
    assert len(parsed) == 5
    assert code_version(entry, src, Cache(tmp_path / "cache")) == first
    assert len(parsed) == 5
    _edit(src / "scdpo" / "names.py", "'dpo',", "'dpo', 'scdpo'")
    assert code_version(entry, src, Cache(tmp_path / "cache")) != first
    assert len(parsed) == 6


def test_every_workflow_script_has_a_code_version():
    repo = Path(__file__).resolve().parents[1]
    scripts = sorted(p for p in (repo / "workflow_scripts").glob("*.py") if p.name[0] != "_")
    for script in scripts:
        modules = modules_of(script, repo / "src", Cache(None))
        assert "scdpo" in modules, script.name
    # Each generation rule has its own script: sampling's code is not evaluation's.
    sample = modules_of(
        repo / "workflow_scripts" / "solutions_sample.py", repo / "src", Cache(None)
    )
    predict = modules_of(repo / "workflow_scripts" / "predict.py", repo / "src", Cache(None))
    assert "scdpo.sampling" in sample and "scdpo.step_control" not in sample
    assert "scdpo.evaluate" in predict and "scdpo.sampling" not in predict
