"""Tables, figures and claim verdicts from the files the pipeline wrote, one module per stage.

Every function reads result files (or frames made from them) and writes plain tables and PNGs;
nothing here trains, samples or loads a checkpoint. The notebooks use ``from missingu import
report`` and call ``report.<function>``: every stage's functions are re-exported here. Needs the
``pipeline`` extra (pandas, matplotlib, seaborn).

- :mod:`.common`: ``write_table``, ``markdown``, ``save_figure``, ``message_figure``
- :mod:`.claims`: verdict words, claim-row columns, (U-Net, cU-Net) pairs, the claim-check
  registry (``CLAIM_CHECKS``, keyed by a claim's kind) and the merged claims table
- :mod:`.train`, :mod:`.sample`, :mod:`.efficiency`, :mod:`.denoise`, :mod:`.quality`,
  :mod:`.stepaware`: each stage's tables, figures and claim checks
"""

from .claims import (
    CLAIM_CHECKS,
    CLAIM_COLUMNS,
    CLAIM_KINDS,
    claim_frame,
    claim_kind,
    cost_verdict,
    decide,
    merge_claims,
    own_setting_counts,
    setting_of,
    status_row,
    unet_cunet_pairs,
)
from .common import markdown, message_figure, metric_note, numeric, save_figure, write_table
from .denoise import (
    BETTER,
    DENOISE_METRICS,
    denoising_claims,
    denoising_table,
    plot_denoising_curves,
    plot_denoising_examples,
    read_denoising,
)
from .efficiency import (
    MEASURES,
    bench_curve_table,
    bench_table,
    claims_table,
    efficiency_table,
    plot_bench_curves,
    plot_claims,
    speed_claims,
)
from .quality import QUALITY_METRICS, plot_quality, quality_claims, quality_table
from .sample import plot_sample_grids, sampling_table
from .stepaware import (
    importance_grid,
    plot_importance_heatmap,
    plot_stepaware_pareto,
    plot_strategy_heatmap,
    read_importance,
    stepaware_claims,
    stepaware_table,
)
from .train import plot_loss_curves, read_loss_curves, training_table

__all__ = [
    "BETTER", "CLAIM_CHECKS", "CLAIM_COLUMNS", "CLAIM_KINDS", "DENOISE_METRICS", "MEASURES", "QUALITY_METRICS",
    "bench_curve_table", "bench_table", "claim_frame", "claim_kind", "claims_table", "cost_verdict", "decide",
    "denoising_claims",
    "denoising_table", "efficiency_table", "importance_grid", "markdown", "merge_claims", "message_figure",
    "metric_note", "numeric", "own_setting_counts", "plot_bench_curves", "plot_claims", "plot_denoising_curves",
    "plot_denoising_examples", "plot_importance_heatmap", "plot_loss_curves", "plot_quality", "plot_sample_grids",
    "plot_stepaware_pareto", "plot_strategy_heatmap", "quality_claims", "quality_table", "read_denoising",
    "read_importance", "read_loss_curves", "sampling_table", "save_figure", "setting_of", "speed_claims",
    "status_row", "stepaware_claims", "stepaware_table", "training_table", "unet_cunet_pairs", "write_table",
]
