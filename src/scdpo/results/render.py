"""Formatting shared by the result tables: intervals, p-values, model order, HTML, markdown."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pandas as pd

from scdpo.names import model_order


def fmt_ci(value: float, low: float, high: float, signed: bool = False) -> str:
    """'76.8 [74.5, 79.0]' (accuracy points); signed for differences."""
    if math.isnan(value):
        return "n/a"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111;max-width:80em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
p.note{color:#444;font-size:.9em;max-width:60em}
"""


def html_page(
    title: str, sections: Sequence[tuple[str, pd.DataFrame | str]], note: str = ""
) -> str:
    """A self-contained page of headed tables (DataFrames) or raw HTML fragments."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, pd.DataFrame):
            body = body.to_html(index=False, border=0, na_rep="")
        parts.append(body)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def markdown_page(title: str, sections: Sequence[tuple[str, pd.DataFrame]], note: str = "") -> str:
    parts = [f"# {title}\n"]
    if note:
        parts.append(f"{note}\n")
    for heading, table in sections:
        parts.append(f"## {heading}\n\n{table.to_markdown(index=False, disable_numparse=True)}\n")
    return "\n".join(parts)


def pct(fraction: float) -> float:
    # Percent, rounded so that floating-point dust (a Wilson bound of 3e-15) reads as 0.
    return round(100 * fraction, 6)


def sorted_by_model(table: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by `keys`, the model `column` in pipeline order (SFT, DPO, ..., SCDPO)."""
    order = table[column].map(model_order)
    keys = ["_o" if key == column else key for key in keys]
    return table.assign(_o=order).sort_values(keys).drop(columns="_o").reset_index(drop=True)
