"""The per-rule conda envs install: their pip pins resolve on PyPI, their conda pins agree.

Creating the envs needs conda channels, which CI cannot reach, but every env's packages come from
pip, so `pip install --dry-run` of an env's pins against PyPI shows whether it installs. The
network tests (marker `network`; deselect offline with `-m "not network"`) run pip isolated from
the machine's pip settings: PIP_CONFIG_FILE=/dev/null skips every pip config file, including the
global /etc/xdg/pip/pip.conf that adds a constraint file capping torch on the dev machine
(`--isolated` alone still reads global and site config files), and `--isolated` drops PIP_*
variables such as PIP_FIND_LINKS, which would offer local `+cpu` wheels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
PIP_TIMEOUT = 600


def conda_pins(env: Path) -> dict[str, str]:
    """`python=3.11` -> {"python": "3.11"}."""
    deps = yaml.safe_load(env.read_text())["dependencies"]
    return dict(d.split("=", 1) for d in deps if isinstance(d, str))


def pip_pins(env: Path) -> list[str]:
    deps = yaml.safe_load(env.read_text())["dependencies"]
    return [spec for d in deps if isinstance(d, dict) for spec in d.get("pip", [])]


def pinned_name(spec: str) -> str:
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", spec.split("==")[0])).lower()


def isolated_pip(*args: str) -> subprocess.CompletedProcess:
    """pip from the project venv, blind to this machine's pip config files and PIP_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args],
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )


# --- conda level, offline -------------------------------------------------------------------------


def test_every_env_pins_the_same_python_and_pip():
    pins = {env.name: conda_pins(env) for env in ENVS}
    assert all(set(p) == {"python", "pip"} for p in pins.values()), pins
    assert len({(p["python"], p["pip"]) for p in pins.values()}) == 1, pins


def test_env_python_is_the_projects():
    """The envs' python satisfies requires-python and is the one the tests (and pip) run on."""
    python = conda_pins(ENVS[0])["python"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert Version(python) in SpecifierSet(project["requires-python"])
    assert python == "{}.{}".format(*sys.version_info[:2]), (
        f"the envs pin python={python}: run the tests with it, so that pip resolves for it"
    )


# --- pip level, against PyPI ----------------------------------------------------------------------


def requested(env: Path) -> list[str]:
    """The env's pip pins and its conda-pinned pip, which must exist for its python too."""
    return sorted([*pip_pins(env), f"pip=={conda_pins(env)['pip']}"])


def _resolve(env: Path, out: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Dry-run install of what the env requests into an empty env."""
    report = out / f"{env.stem}.json"
    result = isolated_pip(
        # fast-deps: where an index serves no PEP 658 metadata (PyPI does), read each wheel's
        # metadata with HTTP range requests instead of downloading it (torch alone is 0.5 GB).
        "install", "--use-feature=fast-deps", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), *requested(env),
    )  # fmt: skip
    return result, report


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """All envs resolved at once (pip waits on the network), each distinct pin set once."""
    out = tmp_path_factory.mktemp("env-reports")
    distinct = {tuple(requested(env)): env for env in ENVS}
    with ThreadPoolExecutor(max_workers=len(distinct)) as pool:
        reports = pool.map(lambda env: _resolve(env, out), distinct.values())
        results = dict(zip(distinct, reports, strict=True))
    return {env.name: results[tuple(requested(env))] for env in ENVS}


@pytest.mark.network
@pytest.mark.parametrize("env", ENVS, ids=[e.stem for e in ENVS])
def test_env_pip_pins_resolve_on_pypi(env, resolutions):
    result, report_path = resolutions[env.name]
    assert result.returncode == 0, f"{env.name} does not resolve:\n{result.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    resolved = {pinned_name(i["metadata"]["name"]): i for i in report["install"]}
    python = Version(conda_pins(env)["python"] + ".0")
    for spec in requested(env):
        version = resolved[pinned_name(spec)]["metadata"]["version"]
        # Exactly the pin: a local "+cpu" build would mean pip saw this machine's wheels.
        assert version == spec.split("==")[1], f"{env.name}: {spec} resolved to {version}"
    for name, item in resolved.items():
        requires = item["metadata"].get("requires_python")
        assert not requires or python in SpecifierSet(requires), f"{env.name}: {name} {requires}"


# --- a model saved by the training env loads in the generation env --------------------------------


def _pin(env: str, package: str) -> str:
    return next(s for s in pip_pins(REPO / "envs" / env) if pinned_name(s) == package)


LOAD_AND_SCORE = """
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
path, text = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
ids = tokenizer(text)["input_ids"]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
print(json.dumps({"version": transformers.__version__, "ids": ids,
                  "special": tokenizer.all_special_tokens, "logits": logits.tolist()}))
"""


def _save_tiny_model(path: Path) -> None:
    """A tiny Llama and a BPE tokenizer with marker special tokens, as model_base makes them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    markers = ["<|endofblock|>", "<|endofmessage|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", *markers])
    bpe.train_from_iterator(["12 + 30 = 42", "print(6 * 7)", "The answer is 42."] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=markers,
    )  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.mark.network
def test_model_saved_by_train_env_loads_in_generate_env(tmp_path):
    """train.yaml's transformers saves; generate.yaml's (older, vLLM's cap) loads the same model."""
    saving, loading = _pin("train.yaml", "transformers"), _pin("generate.yaml", "transformers")
    assert _pin("eval.yaml", "transformers") == loading
    site = tmp_path / "site"
    installed = isolated_pip("install", "--quiet", "--no-deps", "--target", str(site), loading)
    assert installed.returncode == 0, installed.stderr[-3000:]
    model = tmp_path / "model"
    _save_tiny_model(model)
    text = "Q: 12 + 30<|endofblock|>print(6 * 7)<|endofmessage|>"
    scores = {}
    for name, pythonpath in (("saver", ""), ("loader", str(site))):
        run = subprocess.run(
            [sys.executable, "-c", LOAD_AND_SCORE, str(model), text],
            env={**os.environ, "PYTHONPATH": pythonpath},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, f"{name}: {run.stderr[-3000:]}"
        scores[name] = json.loads(run.stdout.splitlines()[-1])
    assert scores["saver"]["version"] == saving.split("==")[1]
    assert scores["loader"]["version"] == loading.split("==")[1]
    assert scores["loader"]["ids"] == scores["saver"]["ids"]
    assert set(scores["loader"]["special"]) == set(scores["saver"]["special"])
    import torch

    torch.testing.assert_close(
        torch.tensor(scores["loader"]["logits"]), torch.tensor(scores["saver"]["logits"])
    )
