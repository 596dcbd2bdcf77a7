"""Table formatting of the report helpers."""

from __future__ import annotations

import pandas as pd

from missingu.report import markdown, write_table


def test_markdown_keeps_integers_and_blanks_missing(tmp_path):
    df = pd.DataFrame({"model": ["unet", "cunet"], "calls": [1000, 50], "evals": [float("nan"), 20000.0],
                       "seconds": [80.3012, 4.0]})
    text = markdown(df)
    rows = text.splitlines()
    assert "1,000" in rows[2] and "20,000" in rows[3] and "80.3" in rows[2]
    assert "nan" not in text.lower()
    csv_path, md_path = write_table(df, tmp_path / "t")
    assert pd.read_csv(csv_path).shape == (2, 4)
    assert md_path.read_text().strip() == text
