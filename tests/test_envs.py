"""The per-rule conda envs: every rule names one, each parses and pins every package.

Creating them needs conda channels, which CI cannot reach; this checks everything else.
"""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))


def _rules() -> dict[str, str | None]:
    """rule name -> its conda: env path (None when missing), from every rules/*.smk."""
    rules = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            match = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            rules[name] = str((smk.parent / match.group(1)).resolve()) if match else None
    return rules


def test_every_rule_has_an_existing_conda_env():
    rules = _rules()
    assert len(rules) >= 10  # the parse found the rules (19 when written)
    for name, env in rules.items():
        assert env is not None, f"rule {name} has no conda: env"
        assert Path(env).is_file(), f"rule {name}: {env} does not exist"


def test_envs_parse_and_pin_every_package():
    assert {p.stem for p in ENVS} == {"data", "train", "generate", "eval", "report"}
    for path in ENVS:
        env = yaml.safe_load(path.read_text())
        assert env["channels"], path
        conda, pip = [], []
        for dep in env["dependencies"]:
            (pip.extend(dep["pip"]) if isinstance(dep, dict) else conda.append(dep))
        for spec in conda:
            assert re.fullmatch(r"[\w.-]+=[\w.]+", spec), f"{path.name}: unpinned {spec}"
        for spec in pip:
            assert re.fullmatch(r"[\w.\-\[\]]+==[\w.]+", spec), f"{path.name}: unpinned {spec}"


# Pins that differ from requirements.txt (what the test suite runs), and why. vLLM pins torch
# exactly and caps transformers; the newest vLLM on the tested torch 2.13.0 is 0.32.0
# (docs/envs.md). A model saved by train.yaml's transformers loads in these envs
# (tests/test_env_resolve.py).
VLLM_CAPS = {"transformers": "vllm 0.32.0: >=5.16.1,<5.20.0", "numpy": "mistral-common: <2.4"}
DEVIATIONS = {("generate.yaml", n): why for n, why in VLLM_CAPS.items()} | {
    ("eval.yaml", n): why for n, why in VLLM_CAPS.items()
}


def test_env_pins_agree_with_the_tested_requirements():
    """A package pinned in an env has the version the test suite ran with, or a listed reason."""
    tested = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            tested[name.lower().replace("_", "-")] = version
    differing = set()
    for path in ENVS:
        for dep in yaml.safe_load(path.read_text())["dependencies"]:
            for spec in dep.get("pip", []) if isinstance(dep, dict) else []:
                name, version = spec.split("==")
                name = re.sub(r"\[.*\]", "", name).lower().replace("_", "-")
                if name in tested and tested[name] != version:
                    differing.add((path.name, name))
                    assert (path.name, name) in DEVIATIONS, f"{path.name}: {spec} vs {tested[name]}"
    assert differing == DEVIATIONS.keys(), "a listed deviation is gone: drop it from DEVIATIONS"
