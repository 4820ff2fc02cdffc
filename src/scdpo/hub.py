"""The Hugging Face hub: which models and datasets a config names, fetching them into one cache on
the login node, and reading them from that cache, offline, in every compute job.

Compute nodes often cannot reach the internet, and a gated model (Mistral-7B-v0.1) needs the
user's token, which belongs on the login node only. So one local rule, `hub_fetch`, downloads
every snapshot an experiment names (`snapshot_download`, the user's token from the environment:
`HF_TOKEN` or the file `hf auth login` wrote) into the cache, and compute jobs run with the hub
offline (`offline_environment`), reading snapshots through `local_dir`, the one place that turns
huggingface_hub's "not in the cache" errors into a message naming the model or dataset and the
fetch rule. A name that is a local directory is read as it is and never fetched.

The cache: `$SCDPO_HUB_CACHE` (hub snapshots under `hub/`, datasets' Arrow files under
`datasets/`), else the user's own `HF_HUB_CACHE` or `HF_HOME`, else `resources/hub` in the
working directory; it must be on a file system the compute nodes share. Standard library at
import: rules/common.smk imports this module to plan the jobs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

CACHE_ENV = "SCDPO_HUB_CACHE"
DEFAULT_CACHE = "resources/hub"
FETCH_RULE = "hub_fetch"
KINDS = ("model", "dataset")
# What every compute job runs with: no request reaches the hub, files come from the cache.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Files of a model repository the pipeline never reads: other frameworks' weights, the original
# (non-Hugging Face) checkpoint some repositories carry beside the converted one.
UNUSED_MODEL_FILES = [
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "*.gguf",
    "*.tflite",
    "*.mlmodel",
    "*.pth",
    "*.pt",
    "original/*",
    "consolidated*",
    "onnx/*",
    "coreml/*",
    "openvino/*",
]
PYTORCH_WEIGHTS = ["*.bin", "*.bin.index.json"]


class NotFetched(RuntimeError):
    """A model or dataset that is neither a local directory nor in the hub cache."""


# --- where: the cache and the jobs' environment ---------------------------------------------------


def cache_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """HF_HUB_CACHE and HF_DATASETS_CACHE for every job, unless the user set the cache
    (`HF_HUB_CACHE` or `HF_HOME`; `SCDPO_HUB_CACHE` wins over both). Absolute, so that a job
    started in another directory reads the same cache."""
    root = environ.get(CACHE_ENV)
    if not root and ("HF_HUB_CACHE" in environ or "HF_HOME" in environ):
        return {}
    root = os.path.abspath(os.path.expanduser(root or DEFAULT_CACHE))
    return {
        "HF_HUB_CACHE": os.path.join(root, "hub"),
        "HF_DATASETS_CACHE": os.path.join(root, "datasets"),
    }


def offline_environment() -> dict[str, str]:
    """The variables every compute job runs with (set when its Snakemake parses the workflow)."""
    return dict(OFFLINE)


def hub_cache(environ: Mapping[str, str] | None = None) -> str:
    """The hub cache folder a process with `environ` reads (huggingface_hub's own rule)."""
    environ = os.environ if environ is None else environ
    if environ.get("HF_HUB_CACHE"):
        return environ["HF_HUB_CACHE"]
    home = environ.get("HF_HOME") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def is_offline(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in OFFLINE)


# --- what: the hub ids an experiment names ---------------------------------------------------


# What the hub takes for a repository id (as scdpo.config_check); anything else is a path.
_REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


def is_hub_id(name: str) -> bool:
    """A model or dataset name that is no local directory (`from_pretrained` and
    `load_dataset` read a directory of that name before they ask the hub)."""
    return not os.path.isdir(name)


def _is_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or not _REPO_ID.fullmatch(name)


def _dataset_ids(source: dict | list) -> list[str]:
    sources = source if isinstance(source, list) else [source]
    return [s["id"] for s in sources if s.get("source") == "hf" and is_hub_id(s["id"])]


def experiment_sources(config: dict, exp: str) -> list[dict[str, str]]:
    """Every hub model and dataset the experiment's jobs read, as {kind, id}, sorted: its base
    model, its SFT and DPO question sources, its benchmarks. Empty for the embedded default."""
    spec = config["experiments"][exp]
    found = set()
    model = spec["model"]
    if model["source"] == "hf" and is_hub_id(model["name_or_path"]):
        found.add(("model", model["name_or_path"]))
    for source in (spec["data"]["sft"], spec["data"]["dpo"]):
        found |= {("dataset", name) for name in _dataset_ids(source)}
    for benchmark in spec["benchmarks"]:
        found |= {("dataset", name) for name in _dataset_ids(config["benchmarks"][benchmark])}
    return [{"kind": kind, "id": name} for kind, name in sorted(found)]


def marker(exp: str) -> str:
    """The fetch rule's output for one experiment: what it fetched (ids, commits, folders)."""
    return f"results/{exp}/hub/fetched.json"


# --- which files of a repository ----------------------------------------------------------------


def ignore_patterns(kind: str, files: Iterable[str]) -> list[str]:
    """Files of a repository not to fetch: for a model, weights in formats the pipeline does not
    read, and PyTorch `.bin` shards where safetensors are there too (Mistral-7B-v0.1 has both,
    14 GB each). Decided from the repository's file list at fetch time and from the snapshot's
    files when reading, so both ask for the same files."""
    if kind != "model":
        return []
    names = list(files)
    patterns = list(UNUSED_MODEL_FILES)
    if any(fnmatch.fnmatch(name, "*.safetensors") for name in names):
        patterns += PYTORCH_WEIGHTS
    return patterns


def _repo_folder(name: str, kind: str, cache: str) -> Path:
    return Path(cache) / f"{kind}s--{name.replace('/', '--')}"


def cached_snapshot(name: str, kind: str, cache: str | None = None) -> Path | None:
    """The snapshot folder of the repository's `main` in the cache, if any (no network, no
    completeness check: for sizing jobs at planning time)."""
    folder = _repo_folder(name, kind, cache or hub_cache())
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = folder / "snapshots" / ref.read_text().strip()
    return snapshot if snapshot.is_dir() else None


def _files(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()]


# --- sizing: what a model needs in memory --------------------------------------------------------

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def model_bytes(name: str, dtype: str = "auto") -> int | None:
    """The size of a model's weights in `dtype`, without network: from its local or cached
    folder (weight files, scaled from the checkpoint's dtype), else from a parameter count in
    its name ("internlm2-20b": 20e9); None when neither says."""
    folder = Path(name) if not is_hub_id(name) else cached_snapshot(name, "model")
    if folder is not None:
        config = folder / "config.json"
        stored = json.loads(config.read_text()).get("torch_dtype") if config.is_file() else None
        for pattern in ("*.safetensors", "*.bin"):
            files = list(folder.glob(pattern))
            if files:
                size = sum(f.stat().st_size for f in files)
                if dtype in DTYPE_BYTES and stored in DTYPE_BYTES:
                    size = size * DTYPE_BYTES[dtype] // DTYPE_BYTES[stored]
                return size
    count = re.search(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", name.rsplit("/", 1)[-1])
    if count:
        return int(float(count[1]) * 1e9 * DTYPE_BYTES.get(dtype, 2))
    return None


# --- reading: the one place a model or dataset is looked up ---------------------------------------


def _not_fetched(name: str, kind: str, reason: object) -> NotFetched:
    return NotFetched(
        f"{kind} '{name}' is not in the hub cache {hub_cache()} ({reason}). Compute jobs read "
        f"the hub offline, from that cache only: fetch it on the login node with the rule "
        f"'{FETCH_RULE}' (run the workflow from there, e.g. `snakemake --profile slurm "
        f"--configfile ...`, or only the fetch: `snakemake ... --until {FETCH_RULE}`); with "
        f"another cache folder, set {CACHE_ENV} the same for the login node and the jobs."
    )


def local_dir(name: str, kind: str, download: bool = False) -> str:
    """The local folder of a model or dataset: a local directory as it is, else the complete
    snapshot of the hub id in the cache. Only with `download` (the fetch rule, the login node)
    may a missing snapshot be downloaded; every other reader fails with `NotFetched`, which
    names the model or dataset and the fetch rule."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {KINDS}")
    if not is_hub_id(name):
        return name
    if _is_path(name):
        raise FileNotFoundError(f"{kind} directory {name} does not exist")
    from huggingface_hub import snapshot_download

    # LocalEntryNotFoundError covers IncompleteSnapshotError (a snapshot cut short).
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    cached = cached_snapshot(name, kind)
    patterns = ignore_patterns(kind, _files(cached) if cached else [])
    try:
        return snapshot_download(
            name, repo_type=kind, local_files_only=True, ignore_patterns=patterns
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        if not download or is_offline():
            raise _not_fetched(name, kind, _first_line(error)) from None
    return fetch_one(name, kind)["snapshot"]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# --- fetching: the login node ------------------------------------------------------------------


def fetch_one(name: str, kind: str, token: str | bool | None = None) -> dict:
    """Download one repository's snapshot into the cache (what `main` points at now; files
    already there are kept). A gated or private repository needs the user's token: `HF_TOKEN`,
    or the file `hf auth login` wrote; the error then says so."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        files = HfApi(token=token).list_repo_files(name, repo_type=kind)
        patterns = ignore_patterns(kind, files)
        path = snapshot_download(name, repo_type=kind, ignore_patterns=patterns, token=token)
    except (GatedRepoError, RepositoryNotFoundError) as error:
        raise PermissionError(
            f"{kind} '{name}': {_first_line(error)}. A gated or private repository needs your "
            "token on the login node (HF_TOKEN, or `hf auth login`) and your acceptance of its "
            "terms on its hub page; compute jobs never need it."
        ) from error
    except HfHubHTTPError as error:
        raise ConnectionError(f"{kind} '{name}': {_first_line(error)}") from error
    snapshot = Path(path)
    kept = _files(snapshot)
    return {
        "kind": kind,
        "id": name,
        "commit": snapshot.name,
        "snapshot": str(snapshot),
        "files": len(kept),
        "bytes": sum((snapshot / f).stat().st_size for f in kept),
    }


def fetch(sources: list[dict[str, str]], token: str | bool | None = None) -> list[dict]:
    """Every source ({kind, id}) into the cache; what was fetched, for the rule's output."""
    return [fetch_one(s["id"], s["kind"], token) for s in sources]


def go_online(environ: dict) -> list[str]:
    """Drop the offline switches from `environ` (the fetch rule's own process, before
    huggingface_hub is imported); returns the names dropped."""
    dropped = [key for key in OFFLINE if key in environ]
    for key in dropped:
        del environ[key]
    return dropped
