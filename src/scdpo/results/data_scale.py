"""The data a run trained on, per source dataset, beside the paper's counts (paper Table 1).

So a user sees at once whether a run's sampling and pair building reached the paper's scale: a
1-right-1-wrong stop rule, say, cannot give DPO (data-equal) the pairs that make it data-equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from scdpo.names import STEP_CONTROLLED, model_label

# Paper Table 1 (thousands of pairs, train + eval) per model family and source tag:
# DPO naive, DPO (data-equal), and SCDPO's step-controlled part (its naive part is DPO's).
PAPER_PAIRS = {
    "mistral_7b_ours": {"gsm8k": (7, 13, 6), "math": (5, 17, 12)},
    "metamath_mistral_7b": {"gsm8k": (7, 13, 6), "math": (6, 17, 11)},
    "mathcoder_mistral_7b": {"gsm8k": (6, 12, 6), "math": (6, 19, 13)},
}


def source_of(question_id: str) -> str:
    """The source tag of a question id ('gsm8k:12' -> 'gsm8k'); '' for untagged ids."""
    return question_id.split(":", 1)[0] if ":" in question_id else ""


def _sampling_by_source(samples: Sequence[dict]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for question in samples:
        row = rows.setdefault(
            source_of(question["id"]),
            {
                "questions sampled": 0,
                "with a preferred": 0,
                "with a dispreferred": 0,
                "samples drawn": 0,
                "preferred": 0,
                "dispreferred": 0,
            },
        )
        labels = [(s["preferred"], s["dispreferred"]) for s in question["samples"]]
        row["questions sampled"] += 1
        row["with a preferred"] += any(p for p, _ in labels)
        row["with a dispreferred"] += any(d for _, d in labels)
        row["samples drawn"] += len(labels)
        row["preferred"] += sum(p for p, _ in labels)
        row["dispreferred"] += sum(d for _, d in labels)
    return rows


def data_scale_table(
    samples: Sequence[dict], pairs: Mapping[str, Sequence[dict]], paper_model: str | None
) -> pd.DataFrame:
    """One row per source: sampling counts, the pairs of each variant (`pairs`: variant ->
    its train + eval pairs) and, for a paper model family, the paper's pairs in thousands."""
    rows = _sampling_by_source(samples)
    for variant, records in pairs.items():
        label, has_sc = model_label(variant), any(p["kind"] == STEP_CONTROLLED for p in records)
        for source in rows:
            chosen = [p for p in records if source_of(p["id"]) == source]
            sc = sum(p["kind"] == STEP_CONTROLLED for p in chosen)
            if has_sc:
                rows[source][f"{label} naive pairs"] = len(chosen) - sc
                rows[source][f"{label} step-controlled pairs"] = sc
            else:
                rows[source][f"{label} pairs"] = len(chosen)
    paper = PAPER_PAIRS.get(paper_model or "", {})
    for source, row in rows.items():
        if source in paper:
            naive, data_equal, sc = paper[source]
            row |= {
                "paper DPO pairs": f"{naive}K",
                "paper DPO (data-equal) pairs": f"{data_equal}K",
                "paper SCDPO step-controlled pairs": f"{sc}K",
            }
    return pd.DataFrame([{"source": s or "(untagged)", **row} for s, row in sorted(rows.items())])
