"""`snakemake --report` after a completed micro run: one self-contained page with every result."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest
from workflow_run import snakemake

pytestmark = pytest.mark.slow

# How the HTML report embeds a result: a base64 data URI that names the file.
DATA_URI = re.compile(r"data:[\w.+/-]+;charset=[\w-]+;filename=([^;\"]+);base64,([A-Za-z0-9+/=]+)")
INTERVAL = re.compile(r"\d+\.\d \[\d+\.\d, \d+\.\d\]")


@pytest.fixture(scope="module")
def report(micro_run):
    config = str(micro_run / "micro.yaml")  # absolute: Snakemake reads it before --directory
    result = snakemake(micro_run, "--configfile", config, "--report", "report.html")
    assert result.returncode == 0, result.output[-4000:]
    page = (micro_run / "report.html").read_text()
    embedded: dict[str, list[bytes]] = {}
    for name, data in DATA_URI.findall(page):
        embedded.setdefault(name, []).append(base64.b64decode(data))
    return page, embedded


def _text(embedded: dict, name: str) -> str:
    assert name in embedded, sorted(embedded)
    return embedded[name][0].decode("utf-8")


def test_report_has_table_1_with_intervals_and_paired_tests(report):
    page, embedded = report
    table = _text(embedded, "accuracy_ci.html")
    assert len(INTERVAL.findall(table)) >= 5  # SFT, DPO, DPO (data-equal), SCDPO, Step-DPO
    assert "SCDPO - DPO (data-equal)" in table and "exact McNemar" in table
    assert "SCDPO - Step-DPO" in table
    assert "step-controlled pairs" in table and "step-level pairs" in table
    assert "accuracy_ci.csv" in embedded and "Table 1" in page


def test_report_has_the_temperature_pilot_plot(report, micro_run):
    _, embedded = report
    assert embedded["pilot.png"][0][:8] == b"\x89PNG\r\n\x1a\n"
    pilot = pd.read_csv(micro_run / "results/micro/report/pilot.csv")
    assert sorted(pilot["temperature"]) == [0.0, 1.0] and (pilot["n"] == 10).all()


def test_report_has_credit_pages_for_dpo_and_scdpo(report):
    _, embedded = report
    pages = [name for name in embedded if re.fullmatch(r"pair\d+\.html", name)]
    assert pages
    page = _text(embedded, pages[0])
    for label in ("DPO: chosen", "SCDPO: chosen", "DPO: rejected", "SCDPO: rejected"):
        assert label in page
    assert "background:rgb(" in page and "first erroneous" in page


def test_report_has_the_localisation_metric_for_dpo_and_scdpo(report, micro_run):
    _, embedded = report
    assert "AUC" in _text(embedded, "localisation.html")
    table = pd.read_csv(micro_run / "results/micro/report/localisation.csv")
    assert {"DPO", "SCDPO"} <= set(table["model"])
    scored = table.dropna(subset=["auc"])
    assert not scored.empty and scored["auc"].between(0, 1).all()
    assert table["top1"].between(0, 1).all()


def test_report_has_data_statistics_and_cost(report):
    _, embedded = report
    assert "samples drawn per pair obtained" in _text(embedded, "data_stats.html")
    assert embedded["data_stats.png"][0][:4] == b"\x89PNG"
    cost = _text(embedded, "cost.html")
    assert "dpo_train" in cost and "eval_predict" in cost and "pilot_predict" in cost


def test_report_has_the_training_curves_of_every_training(report, micro_run):
    """Every training of the micro run wrote TensorBoard files into its model's folder; the
    report's curves read them (a loss curve per training, DPO's reward margins)."""
    _, embedded = report
    assert embedded["curves.png"][0][:8] == b"\x89PNG\r\n\x1a\n"
    trainings = ["sft", "dpo", "dpo_data_equal", "scdpo", "step_dpo"]
    for name in trainings:
        events = list((micro_run / "results/micro/models" / name / "tensorboard").rglob("*"))
        assert any("tfevents" in p.name for p in events), name
    curves = pd.read_csv(micro_run / "results/micro/report/curves.csv")
    losses = curves[curves["tag"] == "train/loss"]
    assert set(losses["run"]) == set(trainings)
    margins = curves[curves["tag"].str.contains("rewards/margins")]
    assert set(margins["run"]) == set(trainings) - {"sft"}
