"""The report's tables, statistics and figures on constructed data with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.names import temperature_name
from scdpo.results import accuracy, cost, credit_pages, data_stats, pilot, render
from scdpo.results.plan import run_benchmark_jobs
from scdpo.solution import Block, render_prompt, render_solution

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bernoulli(p: float, n: int, seed: int) -> list[bool]:
    return list(np.random.default_rng(seed).random(n) < p)


def _by_id(correct: list[bool]) -> dict[str, bool]:
    return {f"q{i}": bool(c) for i, c in enumerate(correct)}


# --- Table 1 with confidence ----------------------------------------------------------------------


def _outcomes(n: int = 400, planted: int = 40) -> dict:
    """SFT ~50%; DPO identical to SFT; SCDPO fixes `planted` questions SFT gets wrong."""
    sft = _bernoulli(0.5, n, seed=1)
    wrong = [i for i, c in enumerate(sft) if not c][:planted]
    scdpo = [c or i in wrong for i, c in enumerate(sft)]
    return {
        ("e", "sft", "bench"): _by_id(sft),
        ("e", "dpo", "bench"): _by_id(sft),
        ("e", "scdpo", "bench"): _by_id(scdpo),
    }


def test_accuracy_interval_contains_the_known_rate_in_percent():
    outcomes = {("e", "sft", "b"): _by_id(_bernoulli(0.3, 2000, seed=3))}
    row = accuracy.accuracy_intervals(outcomes).iloc[0]
    assert row["n"] == 2000 and row["correct"] == round(row["accuracy"] * 20)
    assert row["low"] < 30 < row["high"]
    assert 3.5 < row["high"] - row["low"] < 4.5  # 2 * 1.96 * sqrt(.21 / 2000) = 4.0 points


def test_rows_follow_the_paper_model_order():
    table = accuracy.accuracy_intervals(_outcomes())
    assert list(table["model"]) == ["sft", "dpo", "scdpo"]


def test_paired_test_detects_a_planted_difference_and_not_a_null_one():
    diffs = accuracy.paired_comparisons(_outcomes(planted=40)).set_index("comparison")
    planted = diffs.loc["SCDPO - SFT"]
    assert planted["difference"] == pytest.approx(100 * 40 / 400)
    assert planted["low"] > 0 and planted["p_value"] < 1e-6
    assert (planted["model_only_right"], planted["baseline_only_right"]) == (40, 0)
    null = diffs.loc["DPO - SFT"]
    assert null["difference"] == 0 and null["low"] <= 0 <= null["high"]
    assert null["p_value"] == 1.0


def test_only_comparisons_whose_two_models_exist_are_made():
    comparisons = set(accuracy.paired_comparisons(_outcomes())["comparison"])
    # No DPO (data-equal) predictions: neither of its comparisons.
    assert comparisons == {"DPO - SFT", "SCDPO - SFT", "SCDPO - DPO"}


def test_a_paired_test_refuses_predictions_on_different_questions():
    outcomes = _outcomes()
    outcomes[("e", "dpo", "bench")] = {"other": True}
    with pytest.raises(ValueError, match="different questions"):
        accuracy.paired_comparisons(outcomes)


def test_pair_counts_split_by_source_tag_as_in_the_paper():
    pairs = {
        ("e", "dpo"): [{"id": "gsm8k:1", "kind": "naive"}, {"id": "math:1", "kind": "naive"}],
        ("e", "scdpo"): [
            {"id": "gsm8k:1", "kind": "naive"},
            {"id": "gsm8k:1", "kind": "step_controlled"},
            {"id": "gsm8k:2", "kind": "step_controlled"},
            {"id": "math:1", "kind": "step_controlled"},
        ],
    }
    counts = accuracy.pair_counts(pairs)
    row = counts.set_index(["variant", "source"]).loc[("scdpo", "gsm8k")]
    assert (row["naive"], row["step_controlled"], row["total"]) == (1, 2, 3)
    wide = accuracy.pair_counts_wide(counts).set_index("model")
    assert wide.loc["SCDPO", "naive pairs (gsm8k / math)"] == "1 / 0"
    assert wide.loc["SCDPO", "step-controlled pairs (gsm8k / math)"] == "2 / 1"
    assert wide.loc["DPO", "total"] == 2


def test_untagged_pair_counts_have_one_column_per_kind():
    counts = accuracy.pair_counts({("e", "dpo_data_equal"): [{"id": "7", "kind": "naive_extra"}]})
    wide = accuracy.pair_counts_wide(counts)
    assert list(wide.columns) == [
        "experiment",
        "model",
        "naive pairs",
        "step-controlled pairs",
        "total",
    ]
    assert wide.iloc[0]["naive pairs"] == "1"


def test_formatting_of_intervals_and_p_values():
    assert render.fmt_ci(76.84, 74.51, 79.0) == "76.8 [74.5, 79.0]"
    assert render.fmt_ci(1.3, -0.4, 3.0, signed=True) == "+1.3 [-0.4, +3.0]"
    assert render.fmt_p(0.0004) == "<0.001" and render.fmt_p(0.0312) == "0.031"


def _write_predictions(path, by_id: dict[str, bool]) -> str:
    write_jsonl(path, [{"id": i, "correct": c} for i, c in by_id.items()])
    return str(path)


def test_accuracy_report_writes_csv_markdown_and_html(tmp_path):
    paths = {
        key: _write_predictions(tmp_path / f"{key[1]}.jsonl", value)
        for key, value in _outcomes().items()
    }
    write_jsonl(tmp_path / "pairs.jsonl", [{"id": "1", "kind": "step_controlled"}])
    out = {
        name: str(tmp_path / f"out.{name}")
        for name in ("table_csv", "table_md", "csv", "differences", "pairs", "md", "html")
    }
    accuracy.accuracy_report(
        paths, {("e", "scdpo"): [str(tmp_path / "pairs.jsonl")]}, out, n_boot=500
    )
    # The compact table: one row per model, the accuracy of the interval table, pair counts.
    table = pd.read_csv(out["table_csv"]).set_index("model")
    assert list(table.index) == ["SFT", "DPO", "SCDPO"]
    assert table.loc["SCDPO", "pairs"] == 1 and table.loc["SCDPO", "step-controlled pairs"] == 1
    assert math.isnan(table.loc["SFT", "pairs"])
    assert "| SCDPO" in (tmp_path / "out.table_md").read_text()
    md = (tmp_path / "out.md").read_text()
    assert "| SCDPO" in md and "bench (n=400)" in md
    assert "+10.0 [" in md and "<0.001" in md
    assert "<table" in (tmp_path / "out.html").read_text()
    acc = pd.read_csv(out["csv"])
    assert set(acc.columns) >= {"accuracy", "low", "high"}
    assert len(pd.read_csv(out["differences"])) == 3


def test_seeds_are_pooled_into_one_row_with_spread_and_a_test_per_comparison(tmp_path):
    """Three seeds of SCDPO and Step-DPO: one row each with the mean, sd and per-seed accuracy;
    Step-DPO stands beside the others with its step-level pairs and a test against SCDPO."""
    n = 600
    sft = _bernoulli(0.5, n, seed=1)
    wrong = [i for i, c in enumerate(sft) if not c]
    outcomes = {("e", "sft", "b"): _by_id(sft)}
    for s, (fixed, name) in enumerate([(60, "scdpo"), (40, "scdpo-seed1"), (50, "scdpo-seed2")]):
        outcomes[("e", name, "b")] = _by_id(
            [c or i in wrong[s : s + fixed] for i, c in enumerate(sft)]
        )
    for s, name in enumerate(["step_dpo", "step_dpo-seed1", "step_dpo-seed2"]):
        outcomes[("e", name, "b")] = _by_id([c or i in wrong[s : s + 5] for i, c in enumerate(sft)])
    paths = {k: _write_predictions(tmp_path / f"{k[1]}.jsonl", v) for k, v in outcomes.items()}
    write_jsonl(tmp_path / "sc.jsonl", [{"id": "1", "kind": "step_controlled"}])
    write_jsonl(tmp_path / "step.jsonl", [{"id": "1", "kind": "step_level"}] * 3)
    pairs = {
        ("e", "scdpo"): [str(tmp_path / "sc.jsonl")],
        ("e", "step_dpo"): [str(tmp_path / "step.jsonl")],
    }
    out = {
        name: str(tmp_path / f"out.{name}")
        for name in ("table_csv", "table_md", "csv", "differences", "pairs", "md", "html")
    }
    power = {"difference": 0.03, "discordant": 0.15, "alpha": 0.05}
    accuracy.accuracy_report(paths, pairs, out, n_boot=500, power=power)

    acc = pd.read_csv(out["csv"]).set_index("model")
    assert list(acc.index) == ["sft", "scdpo", "step_dpo"]
    base = 100 * sum(sft) / n
    assert acc.loc["scdpo", "seeds"] == 3 and acc.loc["sft", "seeds"] == 1
    assert acc.loc["scdpo", "accuracy"] == pytest.approx(base + 100 * 50 / n)
    assert acc.loc["scdpo", "sd"] == pytest.approx(100 * 10 / n)  # fixes 60, 40, 50
    assert acc.loc["scdpo", "per_seed"].count("/") == 2
    assert acc.loc["scdpo", "low"] < acc.loc["scdpo", "accuracy"] < acc.loc["scdpo", "high"]

    diffs = pd.read_csv(out["differences"]).set_index("comparison")
    assert {"Step-DPO - SFT", "SCDPO - Step-DPO", "SCDPO - SFT"} <= set(diffs.index)
    scdpo_vs_step = diffs.loc["SCDPO - Step-DPO"]
    assert scdpo_vs_step["seeds"] == "3 / 3" and scdpo_vs_step["test"].startswith("bootstrap")
    assert scdpo_vs_step["difference"] == pytest.approx(100 * 45 / n)
    assert scdpo_vs_step["p_value"] < 0.05 and scdpo_vs_step["low"] > 0
    assert scdpo_vs_step["p_seeds_fixed"] < 0.01  # these models, seeds fixed
    # Discordant counts are means over seed pairings, not a question counted once per seed.
    assert scdpo_vs_step["model_only_right"] + scdpo_vs_step["baseline_only_right"] <= 60

    table = pd.read_csv(out["table_csv"]).set_index("model")
    assert table.loc["Step-DPO", "step-level pairs"] == 3 and table.loc["Step-DPO", "pairs"] == 3
    assert table.loc["SCDPO", "seeds"] == 3 and table.loc["SCDPO", "b sd"] > 0
    md = (tmp_path / "out.md").read_text()
    assert " ± " in md and "Step-DPO" in md and "step-level pairs" in md
    assert "Power of the paired test" in md and "1306" in md  # n for 80% power at 3 points


# --- temperature pilot ----------------------------------------------------------------------------


def test_pilot_subset_is_seeded_sized_and_in_file_order():
    records = [{"id": str(i)} for i in range(50)]
    subset = pilot.subset_problems(records, 10, seed=0)
    assert len(subset) == 10
    ids = [int(r["id"]) for r in subset]
    assert ids == sorted(ids) and ids != list(range(10))
    assert subset == pilot.subset_problems(records, 10, seed=0)
    assert pilot.subset_problems(records, 99, seed=0) == records


def test_temperature_names_are_stable_wildcards():
    assert [temperature_name(t) for t in (0.0, 0.5, 1, 1.25)] == ["0", "0.5", "1", "1.25"]


def test_pilot_table_and_plot(tmp_path):
    outcomes = {
        ("b", 1.0): [True] * 3 + [False] * 7,
        ("b", 0.0): [True] * 6 + [False] * 4,
    }
    table = pilot.pilot_table(outcomes, n_boot=200)
    assert list(table["temperature"]) == [0.0, 1.0]
    assert list(table["accuracy"]) == [60.0, 30.0]
    assert (table["low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["high"]).all()
    pilot.plot_pilot(table, tmp_path / "p.png", "pilot")
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


# --- credit assignment ----------------------------------------------------------------------------

BLOCKS = [
    Block("text", "Add them."),
    Block("code", "print(3 + 5)"),
    Block("execution", "8"),
    Block("text", "So \\boxed{8}."),
]


def test_block_spans_tile_the_completion_with_markers_in_their_block():
    completion = render_solution(BLOCKS)
    spans = credit_pages.completion_block_spans(completion)
    assert [completion[s:e] for s, e in spans[:-1]] == [b.render() for b in BLOCKS[:-1]]
    assert completion[slice(*spans[-1])] == BLOCKS[-1].render() + "<|endofmessage|>"
    assert spans[0][0] == 0 and spans[-1][1] == len(completion)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def _pair(i: int, kind: str = "step_controlled") -> dict:
    return {"id": str(i), "kind": kind, "k": 0, "prompt": "p", "chosen": "c", "rejected": "r"}


def test_held_out_sc_pairs_are_used_when_there_are_enough():
    eval_pairs = [_pair(1), _pair(2, "naive"), _pair(3)]
    chosen = credit_pages.select_sc_pairs(eval_pairs, [_pair(9)], min_held_out=2, max_pairs=10)
    assert [(p["id"], p["split"]) for p in chosen] == [("1", "held-out"), ("3", "held-out")]


def test_too_few_held_out_pairs_are_topped_up_in_sample_from_the_end_of_train():
    train = [_pair(10), _pair(11, "naive"), _pair(12), _pair(13)]
    chosen = credit_pages.select_sc_pairs([_pair(1)], train, min_held_out=5, max_pairs=3)
    assert [(p["id"], p["split"]) for p in chosen] == [
        ("1", "held-out"),
        ("12", "in-sample"),
        ("13", "in-sample"),
    ]


def test_token_rewards_from_log_probabilities():
    import torch

    tr = credit_pages.token_rewards_from(
        ["ab", "", "c"], torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-1.5, -2.0, -1.0]), 0.5
    )
    assert tr.offsets == [(0, 2), (2, 2), (2, 3)]
    assert tr.rewards.tolist() == pytest.approx([0.25, 0.0, -1.0])


def test_localisation_table_on_planted_rewards():
    perfect = [("held-out", [-3.0, 1.0, 0.5]), ("held-out", [-1.0, 0.0])]
    blind = [("held-out", [1.0, -3.0, 0.5]), ("in-sample", [2.0, 0.0])]
    table = credit_pages.localisation_table({"scdpo": perfect, "dpo": blind}).set_index(
        ["model", "pairs"]
    )
    assert table.loc[("SCDPO", "held-out"), "auc"] == 1.0
    assert table.loc[("SCDPO", "held-out"), "top1"] == 1.0
    assert table.loc[("SCDPO", "held-out"), "top1_chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert table.loc[("DPO", "all"), "auc"] == 0.0
    assert table.loc[("DPO", "all"), "n_pairs"] == 2
    assert ("SCDPO", "all") not in table.index  # one split only: no pooled row


def test_per_token_localisation_removes_the_length_of_a_block():
    # Block 1 is long: its summed reward is lowest, its mean per token is not.
    pairs = [{"split": "held-out"}]
    summed = {"scdpo": [[-1.0, -4.0]]}
    mean = {"scdpo": [[-1.0, -0.1]]}
    row = credit_pages.localisation_with_per_token(pairs, summed, mean).iloc[0]
    assert (row["auc"], row["top1"]) == (0.0, 0.0)
    assert (row["auc_per_token"], row["top1_per_token"]) == (1.0, 1.0)


def _tiny_model_dirs(tmp_path, texts: list[str]) -> dict[str, str]:
    from scdpo.modeling import create_tiny_llama, save, train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=400)
    spec = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 1,
        "num_heads": 2,
        "max_position_embeddings": 512,
    }
    dirs = {}
    for seed, name in enumerate(("reference", "dpo", "dpo_data_equal", "scdpo")):
        dirs[name] = str(tmp_path / name)
        save(create_tiny_llama(tokenizer, spec, seed), tokenizer, dirs[name])
    return dirs


def test_credit_report_matches_a_direct_implicit_reward(tmp_path):
    from scdpo.modeling import load
    from scdpo.results.credit import block_rewards, implicit_reward

    prompt = render_prompt("Janet has 3 apples and buys 5. How many?", "Solve.")
    pair = {
        "id": "q1",
        "kind": "step_controlled",
        "k": 0,
        "prompt": prompt + BLOCKS[0].render(),
        "chosen": render_solution(BLOCKS[1:]),
        "rejected": render_solution([Block("text", "So \\boxed{9}."), Block("text", "Done.")]),
    }
    dirs = _tiny_model_dirs(tmp_path, [pair["prompt"], pair["chosen"], pair["rejected"]])
    write_jsonl(tmp_path / "eval.jsonl", [pair])
    write_jsonl(tmp_path / "train.jsonl", [_pair(5, "naive")])
    out = {
        "pages": str(tmp_path / "pages"),
        "csv": str(tmp_path / "loc.csv"),
        "md": str(tmp_path / "loc.md"),
        "html": str(tmp_path / "loc.html"),
        "rewards": str(tmp_path / "rewards.jsonl"),
    }
    models = {m: dirs[m] for m in ("dpo", "dpo_data_equal", "scdpo")}
    settings = {"pages": 3, "min_held_out": 1, "max_pairs": 10}
    eval_path, train_path = str(tmp_path / "eval.jsonl"), str(tmp_path / "train.jsonl")
    credit_pages.credit_report(dirs["reference"], models, eval_path, train_path, 0.1, settings, out)
    policy, tokenizer = load(dirs["scdpo"])
    reference, _ = load(dirs["reference"])
    direct = implicit_reward(policy, reference, tokenizer, pair["prompt"], pair["rejected"], 0.1)
    expected = block_rewards(direct, credit_pages.completion_block_spans(pair["rejected"]))
    record = next(read_jsonl(out["rewards"]))
    assert record["split"] == "held-out"
    assert record["rejected_block_rewards"]["scdpo"] == pytest.approx(expected, abs=1e-5)
    assert len(expected) == 2
    pages = sorted((tmp_path / "pages").iterdir())
    assert [p.name for p in pages] == ["pair01.html"]
    page = pages[0].read_text()
    assert "DPO: chosen" in page and "SCDPO: rejected" in page and "first erroneous" in page
    table = pd.read_csv(out["csv"])
    assert list(table["model"]) == ["DPO", "DPO (data-equal)", "SCDPO"]
    assert {"auc", "top1", "auc_per_token", "top1_per_token"} <= set(table.columns)
    assert "AUC" in (tmp_path / "loc.md").read_text()


# --- data statistics ------------------------------------------------------------------------------


def _sample(preferred: bool = False, dispreferred: bool = False, blocks=BLOCKS) -> dict:
    return {
        "blocks": [b.to_json() for b in blocks],
        "temperatures": [1.0],
        "finished": True,
        "correct": preferred,
        "preferred": preferred,
        "dispreferred": dispreferred,
        "noisy": False,
    }


SAMPLES = [
    {"id": "a", "samples": [_sample(), _sample(dispreferred=True), _sample(preferred=True)]},
    {"id": "b", "samples": [_sample(preferred=True), _sample(dispreferred=True)]},
    {"id": "c", "samples": [_sample()] * 4},  # K reached without a pair
]
NEGATIVES = [
    {
        "id": "a",
        "chosen": [b.to_json() for b in BLOCKS],
        "split_points": [0, 2],
        "tries": {"0": 3, "2": 1},
        "negatives": [
            {"k": 0, "tries": 3, "blocks": [BLOCKS[3].to_json()], "temperatures": [1.1]},
            {"k": 2, "tries": 1, "blocks": [BLOCKS[3].to_json()] * 2, "temperatures": [1.1, 1.15]},
        ],
    },
    {
        "id": "b",
        "chosen": [b.to_json() for b in BLOCKS],
        "split_points": [0, 2],
        "tries": {"0": 4},
        "negatives": [],
    },
]


def test_samples_drawn_per_pair_obtained():
    summary = data_stats.sampling_summary(SAMPLES)
    assert summary["samples drawn"] == 9 and summary["questions with a pair"] == 2
    assert summary["samples drawn per pair obtained"] == pytest.approx(9 / 2)
    assert summary["samples drawn per question with a pair (median)"] == 2.5


def test_step_controlled_yield_per_split_index():
    table = data_stats.yield_by_split(NEGATIVES).set_index("k")
    assert table.loc[0, "tried"] == 2 and table.loc[0, "continuations"] == 7
    assert table.loc[0, "negatives per split point"] == 0.5
    assert table.loc[2, "negatives per continuation"] == 1.0
    summary = data_stats.step_control_summary(NEGATIVES)
    assert summary["continuations per SC pair obtained"] == pytest.approx(8 / 2)


def test_temperature_of_the_wrong_continuation():
    table = data_stats.wrong_temperatures(NEGATIVES)
    assert list(table["temperature of last block"]) == [1.1, 1.15]
    assert list(table["negatives"]) == [1, 1]
    assert list(table["mean model calls"]) == [1, 2]


def test_answer_lengths_by_group():
    lengths = data_stats.answer_lengths(SAMPLES, NEGATIVES)
    counts = lengths["group"].value_counts()
    assert counts["naive preferred"] == 2 and counts["naive dispreferred"] == 2
    assert counts["SC chosen suffix"] == 2 and counts["SC rejected suffix"] == 2
    suffix = lengths[lengths["group"] == "SC chosen suffix"]
    assert list(suffix["blocks"]) == [3, 1]  # after k=0 and k=2 of a 4-block solution
    assert suffix["chars"].iloc[1] == len(render_solution(BLOCKS[3:]))


def test_data_stats_report_writes_tables_and_figure(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", SAMPLES)
    write_jsonl(tmp_path / "n.jsonl", NEGATIVES)
    write_jsonl(tmp_path / "p.jsonl", [{"id": SAMPLES[0]["id"], "kind": "naive"}])
    out = {k: str(tmp_path / f"d.{k}") for k in ("md", "html", "png", "yields", "scale")}
    pairs = {"dpo": [str(tmp_path / "p.jsonl")]}
    s, n = str(tmp_path / "s.jsonl"), str(tmp_path / "n.jsonl")
    data_stats.data_stats_report(s, n, pairs, None, out, "t")
    md = (tmp_path / "d.md").read_text()
    assert "samples drawn per pair obtained" in md and "Yield per split index k" in md
    assert "beside the paper" in md and pd.read_csv(out["scale"])["DPO pairs"].sum() == 1
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC


# --- cost -----------------------------------------------------------------------------------------

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"


def _tsv(path, seconds: float, rss: float = 100.0, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = HEADER + ("\tresources" if extra else "")
    row = f"{seconds}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t{seconds / 2}" + (
        f"\t{extra}" if extra else ""
    )
    path.write_text(f"{head}\n{row}\n")


def test_cost_per_stage_with_gpu_hours_only_where_gpus_ran(tmp_path):
    bench = tmp_path / "logs" / "benchmarks"
    _tsv(bench / "eval_predict" / "e" / "sft" / "b.tsv", 3600, rss=2048)
    _tsv(bench / "eval_predict" / "e" / "dpo" / "b.tsv", 1800)
    _tsv(bench / "dpo_train" / "e" / "dpo.tsv", 7200, extra=str({"gpu": 4, "mem_mb": 1}))
    _tsv(bench / "sft_train" / "e.tsv", 360)
    _tsv(bench / "model_base" / "other.tsv", 36)
    _tsv(bench / "sft_train" / "stale.tsv", 99999)  # an earlier run's file, not an input
    # An earlier run's folder, read by the cost plan: rule and experiment from the layout.
    jobs = [job for job in run_benchmark_jobs(bench, ["e"]) if job[0].name != "stale.tsv"]
    assert {(path.relative_to(bench).as_posix(), rule, exp) for path, rule, exp in jobs} == {
        ("eval_predict/e/sft/b.tsv", "eval_predict", "e"),
        ("eval_predict/e/dpo/b.tsv", "eval_predict", "e"),
        ("dpo_train/e/dpo.tsv", "dpo_train", "e"),
        ("sft_train/e.tsv", "sft_train", "e"),
        ("model_base/other.tsv", "model_base", ""),
    }
    records = cost.benchmark_records(jobs)
    gpus = {"sft_train": 0, "dpo_train": 0, "eval_predict": 1}
    table = cost.cost_table(records, gpus, ["model_base", "sft_train", "dpo_train"])
    assert list(table["stage"]) == ["model_base", "sft_train", "dpo_train", "eval_predict", ""]
    # sft_train/e.tsv names the experiment by its file; model_base/other.tsv names none.
    assert list(table["experiment"]) == ["", "e", "e", "e", "total"]
    rows = table.set_index("stage")
    assert rows.loc["eval_predict", "jobs"] == 2
    assert rows.loc["eval_predict", "wall_h"] == pytest.approx(1.5)
    assert rows.loc["eval_predict", "cpu_h"] == pytest.approx(0.75)
    assert rows.loc["eval_predict", "max_rss_gb"] == pytest.approx(2.0)
    assert rows.loc["eval_predict", "gpu_h"] == pytest.approx(1.5)
    assert rows.loc["dpo_train", "gpu_h"] == pytest.approx(8.0)  # the job's own resources win
    assert rows.loc["sft_train", "wall_h"] == pytest.approx(0.1)
    assert math.isnan(rows.loc["sft_train", "gpu_h"])
    assert table.iloc[-1]["gpu_h"] == pytest.approx(9.5)


def test_cost_report_files(tmp_path):
    bench = tmp_path / "logs" / "benchmarks"
    _tsv(bench / "eval_predict" / "e" / "x.tsv", 60)
    out = {k: str(tmp_path / f"c.{k}") for k in ("csv", "md", "html")}
    files, keys = [str(bench / "eval_predict" / "e" / "x.tsv")], [("eval_predict", "e")]
    cost.cost_report(files, keys, {"eval_predict": 0}, out)
    md = (tmp_path / "c.md").read_text()
    assert "eval_predict" in md and "total" in md
    assert json.dumps(pd.read_csv(out["csv"])["jobs"].tolist()) == "[1, 1]"


def test_data_scale_counts_per_source_beside_the_paper():
    from scdpo.results.data_scale import data_scale_table

    def sample(preferred: bool) -> dict:
        return {"preferred": preferred, "dispreferred": not preferred}

    samples = [
        {"id": "gsm8k:1", "samples": [sample(True), sample(False)]},
        {"id": "gsm8k:2", "samples": [sample(False)]},
        {"id": "math:1", "samples": [sample(True), sample(True), sample(False)]},
    ]
    pairs = {
        "dpo": [{"id": "gsm8k:1", "kind": "naive"}, {"id": "math:1", "kind": "naive"}],
        "scdpo": [
            {"id": "gsm8k:1", "kind": "naive"},
            {"id": "math:1", "kind": "step_controlled"},
            {"id": "math:1", "kind": "step_controlled"},
        ],
    }
    table = data_scale_table(samples, pairs, "mistral_7b_ours").set_index("source")
    assert table.loc["gsm8k", "questions sampled"] == 2
    assert table.loc["gsm8k", "with a preferred"] == 1 and table.loc["gsm8k", "dispreferred"] == 2
    assert table.loc["math", "preferred"] == 2 and table.loc["math", "DPO pairs"] == 1
    assert table.loc["math", "SCDPO step-controlled pairs"] == 2
    assert table.loc["gsm8k", "SCDPO naive pairs"] == 1
    assert table.loc["math", "paper SCDPO step-controlled pairs"] == "12K"
    assert "paper DPO pairs" not in data_scale_table(samples, pairs, None).columns


def test_compact_table_keeps_counts_whole_and_leaves_missing_cells_blank():
    """Experiments with different benchmarks, and SFT with no pairs, leave cells empty."""
    acc = pd.DataFrame(
        [
            {"experiment": "e", "model": "sft", "benchmark": "gsm8k", "accuracy": 50.0, "n": 6},
            {"experiment": "f", "model": "sft", "benchmark": "ape", "accuracy": 25.0, "n": 4},
        ]
    ).assign(seeds=1)
    counts = accuracy.pair_counts({("e", "dpo"): [{"id": "gsm8k:1", "kind": "naive"}]})
    table = accuracy.compact_table(acc, counts)
    assert str(table["gsm8k n"].dtype) == "Int64" and str(table["pairs"].dtype) == "Int64"
    markdown = accuracy.table_markdown(table)
    assert "nan" not in markdown and "<NA>" not in markdown
    assert " 50.0 |" in markdown  # accuracy keeps one decimal
    assert "6.0" not in table.to_csv(index=False)
