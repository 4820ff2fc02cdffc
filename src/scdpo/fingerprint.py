"""Content fingerprints of the local files and folders a config names, for the rules' params.

Snakemake re-runs a job when a declared input is newer than its outputs and, for files under 1 MB
only, has another checksum than the one recorded: a copy with new times (`cp`, `rsync` without
`-t`, `touch`) of a large file re-runs its consumers, and a file it does not know of is never
looked at. So the inputs that live outside the workflow (a jsonl source's file, a local dataset
or model directory, a launcher's `--config_file`) are no declared inputs; their consumers carry a
sha256 of the content in their params instead (`local_content`), next to the config block that
names them: an edit changes exactly those params, new times change nothing.

A folder's fingerprint covers the relative name and the content of every file below it (symbolic
links followed), leaving out names that start with a dot (`.git`, the hub's `.cache` of download
metadata) and `__pycache__`, which no loader reads.

Hashing is cached per file in the working directory's `.snakemake/scdpo/fingerprints/`, keyed by
the absolute path and the file's (size, mtime_ns, ctime_ns, inode, device), and per folder, keyed
by the names and stats of its files: a Snakemake start (two per SLURM job) only stats, and a 14 GB
model folder is read once, until a file in it changes. Each
entry is its own file, written under a unique name and renamed into place, so the SLURM jobs that
start together never see a torn entry; a lost or unreadable one is computed again.

Standard library only: `rules/params.smk` imports this at parse time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

CACHE_DIR = os.path.join(".snakemake", "scdpo", "fingerprints")
SKIPPED = ("__pycache__",)  # and every name that starts with a dot


def stat_key(stat: os.stat_result) -> list[int]:
    """What must not change for a cached value to stand: any write changes ctime, a new file
    its inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


class Cache:
    """Values computed from one file's content, one small JSON file per (kind, path)."""

    def __init__(self, root: str | Path | None = CACHE_DIR) -> None:
        self.root = None if root is None else Path(root)
        self._memory: dict[tuple[str, str], tuple[list[int], Any]] = {}

    def _entry(self, kind: str, path: str) -> Path:
        name = hashlib.sha256(f"{kind}\0{path}".encode()).hexdigest()[:40]
        return self.root / kind / f"{name}.json"

    def get(self, kind: str, path: str, key: list[int]) -> Any:
        """The value stored for this file while its stat key is unchanged, else None."""
        held = self._memory.get((kind, path))
        if held and held[0] == key:
            return held[1]
        if self.root is None:
            return None
        try:
            entry = json.loads(self._entry(kind, path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("path") != path or entry.get("key") != key:
            return None
        self._memory[(kind, path)] = (key, entry["value"])
        return entry["value"]

    def put(self, kind: str, path: str, key: list[int], value: Any) -> None:
        self._memory[(kind, path)] = (key, value)
        if self.root is None:
            return
        target = self._entry(kind, path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump({"path": path, "key": key, "value": value}, out)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a read-only working directory: hash again next time

    def cached(self, kind: str, path: str | Path, compute, key: list | None = None) -> Any:
        """`compute(path)` for this file, from the cache while its stat (or `key`) is the same."""
        absolute = os.path.abspath(path)
        key = key if key is not None else stat_key(os.stat(absolute))
        value = self.get(kind, absolute, key)
        if value is None:
            value = compute(absolute)
            self.put(kind, absolute, key, value)
        return value


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_files(root: str | Path) -> list[tuple[str, str]]:
    """(relative POSIX name, path) of every file below `root` that a loader may read, sorted."""
    found = []
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED)
        for name in files:
            if name.startswith(".") or name in SKIPPED:
                continue
            path = os.path.join(folder, name)
            if not os.path.isfile(path):  # a broken link, a socket: nothing a loader reads
                continue
            found.append((Path(os.path.relpath(path, root)).as_posix(), path))
    return sorted(found)


def fingerprint(path: str | Path, cache: Cache | None = None) -> str:
    """`sha256:<hex>` of a file's bytes, or of a folder's file names and contents."""
    cache = cache if cache is not None else default_cache()
    if not os.path.isdir(path):
        return "sha256:" + cache.cached("sha256", path, _sha256)
    files = folder_files(path)
    # One entry for the whole folder, keyed by its files' names and stats: a folder of thousands
    # of shards costs one read of the cache per start.
    listing = json.dumps([(name, stat_key(os.stat(file))) for name, file in files])

    def digest(_) -> str:
        folder = hashlib.sha256(b"folder\n")
        for name, file in files:
            folder.update(f"{name}\0{cache.cached('sha256', file, _sha256)}\n".encode())
        return folder.hexdigest()

    key = [hashlib.sha256(listing.encode()).hexdigest()]
    return "sha256:" + cache.cached("folder", path, digest, key)


_DEFAULT: dict[str, Cache] = {}


def default_cache() -> Cache:
    """The cache of the current working directory (Snakemake's, once it has changed there)."""
    root = os.path.abspath(CACHE_DIR)
    if root not in _DEFAULT:
        _DEFAULT[root] = Cache(root)
    return _DEFAULT[root]


# --- what a config block names -------------------------------------------------------------------


def source_paths(source: dict) -> list[str]:
    """The local file or folder a problem source reads: a jsonl file, or an hf id that is a
    local directory (`datasets` then reads it, whatever the name looks like)."""
    if source.get("source") == "jsonl":
        return [source["path"]]
    if source.get("source") == "hf" and os.path.isdir(source["id"]):
        return [source["id"]]
    return []


def model_paths(model: dict) -> list[str]:
    """A model's local directory (`from_pretrained` reads one before it asks the hub)."""
    name = model.get("name_or_path")
    return [name] if model.get("source") == "hf" and os.path.isdir(name) else []


def launcher_paths(launcher: str) -> list[str]:
    """The `--config_file` an `accelerate launch` line reads."""
    words = shlex.split(launcher)
    found = []
    for i, word in enumerate(words):
        if word == "--config_file" and i + 1 < len(words):
            found.append(words[i + 1])
        elif word.startswith("--config_file="):
            found.append(word.split("=", 1)[1])
    return found


def local_content(paths: list[str], cache: Cache | None = None) -> dict[str, str]:
    """{path as the config writes it: fingerprint}, the param beside the block naming them. A
    hub id that is no local directory names no path: it is tracked by its name."""
    return {path: fingerprint(path, cache) for path in sorted(set(paths))}
