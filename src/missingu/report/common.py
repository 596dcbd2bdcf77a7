"""Table and figure helpers every stage's report uses: Markdown and CSV tables, PNG figures
(written atomically), and the note of a metric that was not computed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_open, atomic_write

Record = Mapping[str, Any]


def write_table(df: pd.DataFrame, stem: str | Path, floatfmt: str = ".4g") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md`` (a Markdown table) atomically."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_open(csv_path) as fh:
        df.to_csv(fh, index=False)
    with atomic_open(md_path) as fh:
        fh.write(markdown(df, floatfmt) + "\n")
    return csv_path, md_path


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A Markdown table: integer columns stay integers, missing values are left blank."""
    shown = df.copy()
    align = []
    for col in shown.columns:
        values = shown[col]
        numeric = values.dtype.kind in "iuf"
        if values.dtype.kind == "f" and values.dropna().apply(float.is_integer).all():
            values = values.astype("Int64")
        if numeric and values.dtype.kind != "f":
            shown[col] = values.map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
        elif numeric:
            shown[col] = values.map(lambda v: "" if pd.isna(v) else format(v, floatfmt))
        else:
            shown[col] = values.map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
        align.append("right" if numeric else "left")
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def message_figure(text: str, path: str | Path) -> None:
    """A small PNG that says, in words, why there is nothing to plot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    save_figure(fig, path)


def numeric(values: pd.Series) -> pd.Series:
    """Numbers of a column; text (a note such as ``not computed: ...``) becomes NaN."""
    return pd.to_numeric(values, errors="coerce")


def metric_note(df: pd.DataFrame, metric: str) -> str | None:
    """The note a metric carries where it was not computed (``not computed: ...``), else None."""
    column = metric if metric in df else f"{metric}_mean"
    text = df[column][numeric(df[column]).isna()].dropna().astype(str)
    return text.iloc[0] if len(text) else None

