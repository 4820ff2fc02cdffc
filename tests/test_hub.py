"""Offline compute jobs (scdpo.hub): the fetch rule's download on the login node, through a fake
hub (tests/fake_hub.py) that wants a token for a gated model, and reads from the cache in
processes that run as compute jobs do: hub offline, endpoint unreachable, no token. A job that
would download fails naming the model or dataset and the fetch rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub

from scdpo import hub

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_token"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port


def _write_repos(root: Path) -> None:
    """A gated model repository with safetensors and .bin weights and an original checkpoint,
    and a dataset repository with one configuration."""
    model = root / "models" / "org" / "gated-model"
    (model / "original").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama", "torch_dtype": "bfloat16"}')
    (model / "model.safetensors").write_bytes(b"s" * 100)
    (model / "pytorch_model.bin").write_bytes(b"b" * 100)
    (model / "original" / "consolidated.00.pth").write_bytes(b"o" * 100)
    dataset = root / "datasets" / "org" / "questions"
    (dataset / "main").mkdir(parents=True)
    rows = [{"question": f"{i} + 1?", "answer": f"so\n#### {i + 1}"} for i in range(3)]
    (dataset / "main" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = ["---", "configs:", "- config_name: main", "  data_files:", "  - split: train"]
    card += ["    path: main/train.jsonl", "---", ""]
    (dataset / "README.md").write_text("\n".join(card))


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    """Python in a fresh process: huggingface_hub reads its settings at import."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """The login node fetched both repositories into a cache; yields (cache, hub, env)."""
    root = tmp_path_factory.mktemp("hub")
    _write_repos(root / "repos")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SCDPO_HUB"))}
    env |= {"SCDPO_HUB_CACHE": str(root / "cache"), "PYTHONPATH": str(REPO / "src")}
    env |= hub.cache_environment(env)
    with FakeHub(root / "repos", gated=("org/gated-model",), token=TOKEN) as fake:
        login = env | {"HF_ENDPOINT": fake.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
        sources = [
            {"kind": "model", "id": "org/gated-model"},
            {"kind": "dataset", "id": "org/questions"},
        ]
        code = (
            "import os, json; from scdpo import hub; hub.go_online(os.environ); "
            f"print(json.dumps(hub.fetch({sources!r})))"
        )
        result = _run(code, login)
        assert result.returncode == 0, result.stderr
        records = json.loads(result.stdout)
        compute = env | {"HF_ENDPOINT": UNREACHABLE, **hub.offline_environment()}
        yield records, fake, compute


def test_the_fetch_uses_the_token_and_skips_weights_the_pipeline_does_not_read(fetched):
    records, fake, _ = fetched
    model = Path(records[0]["snapshot"])
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
    assert all(authorised for _, path, authorised in fake.requests if "gated-model" in path)
    assert records[1]["kind"] == "dataset" and records[1]["files"] == 2


def test_compute_jobs_read_the_cache_offline(fetched):
    records, fake, compute = fetched
    before = len(fake.requests)
    code = (
        "from scdpo import hub; from scdpo.problems import load_hf_problems; "
        "print(hub.local_dir('org/gated-model', 'model')); "
        "print(len(load_hf_problems('org/questions', 'train', 'main', answer_format='gsm8k')))"
    )
    result = _run(code, compute)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [records[0]["snapshot"], "3"]
    assert len(fake.requests) == before  # nothing reached the hub


def test_a_compute_job_that_would_download_fails_naming_it_and_the_fetch_rule(fetched):
    """The loaders model_base and the data rules run, in a job's environment, for ids that were
    never fetched: no download is tried, the message says what and how."""
    _, fake, compute = fetched
    before = len(fake.requests)
    model = "from scdpo.modeling import load_pretrained; load_pretrained('org/never-fetched')"
    dataset = "from scdpo.problems import load_hf_problems; load_hf_problems('org/none', 'train')"
    for call, what in ((model, "model"), (dataset, "dataset")):
        result = _run(call, compute)
        assert result.returncode != 0
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("scdpo.hub.NotFetched"), result.stderr[-2000:]
        assert f"{what} 'org/" in message and "'hub_fetch'" in message, message
    assert len(fake.requests) == before


def test_a_gated_model_without_the_token_says_what_it_needs(fetched, tmp_path):
    _, fake, compute = fetched
    login = compute | {"HF_ENDPOINT": fake.url, "HF_HUB_CACHE": str(tmp_path)}
    result = _run(
        "import os; from scdpo import hub; hub.go_online(os.environ); "
        "hub.fetch([{'kind': 'model', 'id': 'org/gated-model'}])",
        login,
    )
    assert result.returncode != 0
    assert "HF_TOKEN" in result.stderr and "GatedRepo" in result.stderr, result.stderr[-2000:]


def test_a_partly_fetched_snapshot_is_not_read(fetched, tmp_path):
    """A fetch cut off before the weights: the job's read fails instead of loading a model
    without them."""
    records, _, compute = fetched
    snapshot = Path(records[0]["snapshot"])
    weights = snapshot / "model.safetensors"
    target = weights.resolve()
    weights.unlink()
    try:
        result = _run("from scdpo import hub; hub.local_dir('org/gated-model', 'model')", compute)
        assert "NotFetched" in result.stderr and "missing" in result.stderr, result.stderr[-2000:]
    finally:
        weights.symlink_to(target)


def test_experiment_sources_are_the_hub_ids_of_its_jobs():
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    sources = hub.experiment_sources(paper, "internlm2_20b")
    assert sources == [
        {"kind": "dataset", "id": "EleutherAI/hendrycks_math"},
        {"kind": "dataset", "id": "openai/gsm8k"},
        {"kind": "model", "id": "internlm/internlm2-20b"},
    ]
    metamath = {s["id"] for s in hub.experiment_sources(paper, "metamath_mistral_7b")}
    assert "meta-math/MetaMathQA" in metamath and "mistralai/Mistral-7B-v0.1" in metamath
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert all(not hub.experiment_sources(default, exp) for exp in default["experiments"])


def test_the_cache_is_set_for_every_job_unless_the_user_set_one():
    assert hub.cache_environment({}) == {
        "HF_HUB_CACHE": os.path.abspath("resources/hub/hub"),
        "HF_DATASETS_CACHE": os.path.abspath("resources/hub/datasets"),
    }
    assert hub.cache_environment({"HF_HOME": "/shared/hf"}) == {}
    ours = hub.cache_environment({"HF_HOME": "/shared/hf", "SCDPO_HUB_CACHE": "/big/cache"})
    assert ours["HF_HUB_CACHE"] == "/big/cache/hub"


def test_model_sizes_come_from_the_cache_or_the_name(fetched):
    records, _, compute = fetched
    code = "from scdpo import hub; print(hub.model_bytes('org/gated-model', 'float32'))"
    assert _run(code, compute).stdout.strip() == "200"  # 100 bytes of bfloat16, as float32
    assert hub.model_bytes("internlm/internlm2-20b-never-cached", "bfloat16") == 40_000_000_000
    assert hub.model_bytes("org/no-size-here") is None


def _plan(workdir: Path, config: dict) -> str:
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile")]
        + ["--directory", str(workdir), "--configfile", str(workdir / "c.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_embedded_default_plans_no_fetch_and_a_hub_model_waits_for_one(tmp_path):
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert "hub_fetch" not in _plan(tmp_path, default)
    default["experiments"]["tiny"]["model"] = {"source": "hf", "name_or_path": "org/model"}
    plan = _plan(tmp_path, default)
    assert "rule hub_fetch:" in plan
    model_base = plan.split("rule model_base:", 1)[1].split("\n\n", 1)[0]
    assert "input: results/tiny/hub/fetched.json" in model_base, model_base
