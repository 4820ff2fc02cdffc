"""`snakemake --profile slurm`, as the design writes it, works after `make profiles`.

Snakemake resolves a profile *name* in the working directory, then its user config directory
($XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake), then the site one (/etc/xdg/snakemake);
`make profiles` links profiles/<name> into the user one. profiles/default is never linked: it is
the workflow profile, which Snakemake loads from the checkout by itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.common import get_appdirs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """An environment whose user config directory is empty (not the real ~/.config)."""
    return {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SNAKEMAKE_PROFILE": "",
    }


def make_profiles(env: dict[str, str]) -> subprocess.CompletedProcess:
    # -o: take the venv as built; never reinstall it from a test.
    return subprocess.run(
        ["make", "-o", ".venv/.installed", "profiles"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def snakemake_slurm_dry_run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--quiet", "rules"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
    )


def test_make_profiles_makes_the_slurm_profile_name_work(home, tmp_path):
    if not (Path(get_appdirs().site_config_dir) / "slurm").exists():  # a site-wide one would do
        before = snakemake_slurm_dry_run(home)
        assert before.returncode != 0
        assert "no profile.yaml (or config.yaml) found" in before.stdout

    for _ in range(2):  # a second run replaces its own links
        made = make_profiles(home)
        assert made.returncode == 0, made.stderr
    linked = tmp_path / "config" / "snakemake"
    assert (linked / "slurm").resolve() == REPO / "profiles" / "slurm"
    assert not (linked / "default").exists()

    after = snakemake_slurm_dry_run(home)
    assert after.returncode == 0, after.stdout[-3000:]
    # Snakemake's wording: "Using profiles slurm and workflow specific profile profiles/default".
    assert re.search(
        r"Using profiles? slurm and workflow specific profile profiles/default", after.stdout
    )
    assert "sft_train" in after.stdout and "This was a dry-run" in after.stdout


def test_make_profiles_keeps_a_users_own_profile(home, tmp_path):
    own = tmp_path / "config" / "snakemake" / "slurm"
    own.mkdir(parents=True)
    (own / "config.yaml").write_text("jobs: 1\n")
    made = make_profiles(home)
    assert made.returncode != 0
    assert "is not a link" in made.stderr
    assert (own / "config.yaml").read_text() == "jobs: 1\n"
