"""The step-aware study (DDSM, Yang et al. 2024): which network should serve each diffusion step.

Strategies themselves (one network per step, saved as YAML or JSON, run by any DDPM/DDIM sampler
through :class:`~missingu.strategies.StepAwareDenoiser`) are :mod:`missingu.strategies`'. The
study evaluates baselines (each width of a slimmable model alone, each mixed-in model alone, a
hand-made rule), searches (:mod:`missingu.search`: one categorical gene per block of ``block``
consecutive visited steps; a genetic algorithm, NSGA-II's Pareto front, or DDSM's own search),
evaluates random strategies at the searched one's FLOPs, re-scores the final strategies on fresh
seeds and, when ``importance`` is on, sweeps a smaller network over windows of steps
(:mod:`missingu.importance`: which steps matter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .importance import importance_rows, sweep
from .search import gene_count, genes_to_choices, search
from .specs.stepaware import (  # noqa: F401  (re-exported)
    QUALITIES,
    SIDECARS,
    STUDY_NAME,
    ImportanceConfig,
    StepAwareConfig,
    work,
)
from .strategies import (
    Choice,
    StepAwareDenoiser,
    Strategy,
    label,
    output_shape,
    strategy_flops,
    validate,
    visited_steps,
)
from .task import Result

# The first seed of the fresh samples the study's final strategies are re-evaluated on: disjoint
# from the search's seeds (0 .. samples - 1), so the score reported is never the score that chose.
FRESH_SEED = 1_000_000


@dataclass
class Network:
    """One choice of a strategy: how to call it, its per-call FLOPs and its output shape."""

    call: Callable[[Tensor, Tensor], Tensor]
    flops: int
    output_shape: tuple[int, ...]


def networks_of(slimmable: nn.Module, others: Mapping[str, nn.Module], shape: Sequence[int],
                device: torch.device | str = "cpu") -> dict[Choice, Network]:
    """Every choice a strategy may name: each width of ``slimmable`` and each model of ``others``,
    with FLOPs per call and output shape measured (``FlopCounterMode``, batch 1)."""
    from .measure import measure_call
    from .models.ddpm import at_width

    out: dict[Choice, Network] = {}
    for width in slimmable.config.widths:
        with at_width(slimmable, width):
            out[float(width)] = Network(slimmable, measure_call(slimmable, shape).flops,
                                        output_shape(slimmable, shape, device))
    for name, model in others.items():
        out[name] = Network(model, measure_call(model, shape).flops, output_shape(model, shape, device))
    return out


def hand_made(visited: Sequence[int], widths: Sequence[float], fraction: float, timesteps: int) -> Strategy:
    """The rule of thumb: the full width for the least noisy ``fraction`` of the visited steps, the
    width nearest 0.5 for the rest (DDSM's CIFAR-10 strategy is roughly this)."""
    full, half = max(widths), min(widths, key=lambda w: abs(w - 0.5))
    low = set(sorted(visited)[: max(1, round(fraction * len(visited)))])
    return Strategy.from_visited(visited, [full if t in low else half for t in visited], timesteps)


@dataclass
class Study:
    """What :func:`run_study` returns: the rows (one per evaluation, with the strategy itself under
    ``"steps"``), the search history (best objective per generation), the networks, the fresh
    evaluations' features by strategy, and the importance sweep's rows (empty when it is off)."""

    rows: list[dict[str, Any]]
    history: list[dict[str, Any]]
    networks: dict[Choice, Network]
    features: dict[str, Tensor]
    importance: list[dict[str, Any]]


def run_study(
    slimmable: nn.Module,
    others: Mapping[str, nn.Module],
    diffusion: Any,
    spec: Any,
    shape: Sequence[int],
    score: Callable[[Tensor], tuple[float, Tensor]],
    config: StepAwareConfig,
    *,
    reference: Callable[[], Tensor | None] | None = None,
    published: Mapping[str, Strategy] | None = None,
    device: torch.device | str = "cpu",
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    log: Callable[[str], None] = print,
) -> Study:
    """Evaluate the baselines (each uniform width, each other model alone, the hand-made rule, each
    ``published`` strategy, by name: DDSM's CIFAR-10 one, :func:`~missingu.strategies.published`),
    search (``config.objective``), then random strategies at the searched strategy's mean FLOPs;
    then re-evaluate every one of them but the candidates on fresh seeds; then, when
    ``config.importance.enabled``, the importance sweep (:func:`~missingu.importance.importance_rows`).

    ``score(uint8 images) -> (quality, features)`` (lower is better). In the search phase every
    strategy draws the same ``config.samples`` seeds (0, 1, ...), so differences come from the
    networks, not the noise; those scores choose (``phase: search``). The chosen strategies and
    the baselines are then sampled again from ``eval_samples`` fresh seeds (from
    :data:`FRESH_SEED`, the same for every strategy: paired), and those scores are the ones a
    verdict uses (``phase: fresh``; a selected score is biased towards the selection).
    ``reference()``: the reference's features of the quality measure (for the sweep's intervals)."""
    import time

    import numpy as np

    from .data import to_uint8
    from .samplers import sample

    networks = networks_of(slimmable, others, shape, device)
    choices = list(networks)
    visited = visited_steps(spec.kind, diffusion.timesteps, spec.steps)
    full = max(slimmable.config.widths)
    full_mean = networks[full].flops
    rows: list[dict[str, Any]] = []
    shapes = {c: n.output_shape for c, n in networks.items()}

    features: dict[str, Tensor] = {}

    def evaluate(strategy: Strategy, name: str, kind: str, fresh: bool = False) -> tuple[dict[str, Any], Tensor]:
        """Sample and score one strategy; its row joins the table unless it is the sweep's."""
        validate(strategy, diffusion.timesteps, choices, shapes)
        denoiser = StepAwareDenoiser(strategy, {c: n.call for c, n in networks.items()}, slimmable)
        count = (config.eval_samples or config.samples) if fresh else config.samples
        seeds = list(range(FRESH_SEED, FRESH_SEED + count)) if fresh else list(range(count))
        t0 = time.perf_counter()
        images = []
        for first in range(0, len(seeds), config.batch_size):
            out = sample(denoiser, diffusion, spec, shape, seeds[first:first + config.batch_size], device=device)
            images.append(to_uint8(out.images).cpu())
        seconds = time.perf_counter() - t0
        slimmable.width = full
        quality, feats = score(torch.cat(images))
        feats = feats.half() if feats.shape[1] > 256 else feats  # Inception's 2048 dimensions as float16
        total, mean = strategy_flops(strategy, {c: n.flops for c, n in networks.items()}, visited)
        used = [strategy.steps[t] for t in visited]
        row = {"strategy": name, "kind": kind, "phase": "fresh" if fresh else "search", "samples": len(seeds),
               "quality": quality, "mean_gflops": mean / 1e9,
               "total_gflops": total / 1e9, "saving": 1 - mean / full_mean,
               "objective": quality + config.flops_weight * mean / 1e9, "seconds_per_image": seconds / len(seeds),
               "network_calls": len(visited),
               **{f"share_{label(c)}": used.count(c) / len(used) for c in choices},
               "steps": strategy.steps}
        log(f"stepaware {name}: quality {quality:.4g}, {mean / 1e9:.4g} GFLOPs per call "
            f"({row['saving']:.0%} saved), {seconds:.1f} s")
        if kind != "importance":
            if fresh:
                features[name] = feats
            rows.append(row)
            if on_row is not None:
                on_row(rows)
        return row, feats

    for choice in choices:
        evaluate(Strategy.uniform(choice, diffusion.timesteps),
                 f"uniform {label(choice)}" if isinstance(choice, float) else f"{choice} alone", "baseline")
    rule = hand_made(visited, slimmable.config.widths, config.low_noise_fraction, diffusion.timesteps)
    evaluate(rule, "full width at low noise", "baseline")
    for name, strategy in (published or {}).items():
        evaluate(strategy, f"published {name}", "baseline")

    genes = gene_count(len(visited), config.block)

    def strategy_of(g: Sequence[int]) -> Strategy:
        return Strategy.from_visited(visited, genes_to_choices(g, choices, len(visited), config.block),
                                     diffusion.timesteps)

    def objective(g: list[int]) -> tuple[float, float]:
        row, _ = evaluate(strategy_of(g), f"candidate {len(rows)}", "candidate")
        return row["quality"], row["mean_gflops"]

    # the first generation starts from each network alone (every mode) and the hand-made rule (ours),
    # so the search ends at least as good as the best of them on its objective
    ruled = [choices.index(rule.steps[visited[min(g * config.block, len(visited) - 1)]]) for g in range(genes)]
    result = search(genes, len(choices), objective, objective=config.objective, flops_weight=config.flops_weight,
                    population=config.population, generations=config.generations, seed=config.seed,
                    mutation=config.mutation, initial=[] if config.objective == "ddsm" else [ruled])
    found = []
    for i, g in enumerate(result.best):
        name = f"pareto {i}" if config.objective == "pareto" else "searched"
        best = next(r for r in rows if r["kind"] == "candidate" and r["steps"] == strategy_of(g).steps)
        found.append({**best, "strategy": name, "kind": "search"})
    rows.extend(found)
    target = found[0]["mean_gflops"] * 1e9
    flops = np.array([networks[c].flops for c in choices], dtype=float)
    rng = np.random.default_rng(config.seed + 1)
    for k in range(config.random_baselines):
        # random genes drawn with probabilities that give the searched mean FLOPs on average
        # (the minimum-KL tilt of the uniform distribution), the closest of 200 draws kept
        lo, hi = -50.0, 50.0
        scale = flops / flops.max()
        for _ in range(60):
            lam = (lo + hi) / 2
            p = np.exp(-lam * scale)
            p /= p.sum()
            lo, hi = (lam, hi) if (p * flops).sum() > target else (lo, lam)
        draws = [rng.choice(len(choices), size=genes, p=p) for _ in range(200)]
        best_draw = min(draws, key=lambda d: abs(flops[list(d)].mean() - target))
        evaluate(strategy_of([int(v) for v in best_draw]), f"random {k}", "random")
    # the verdicts' scores: every strategy but the candidates again, on fresh seeds
    for row in [r for r in rows if r["kind"] in ("baseline", "search", "random")]:
        evaluate(Strategy(row["steps"]), row["strategy"], row["kind"], fresh=True)
    history = [{"generation": i, **{f"best_{j}": v for j, v in enumerate(h)}} for i, h in enumerate(result.history)]
    importance: list[dict[str, Any]] = []
    if config.importance.enabled:
        full_row = next(r for r in rows if r["strategy"] == f"uniform {label(full)}" and r["phase"] == "fresh")
        cells = [(stub, *evaluate(strategy, f"{stub['network']} at steps {stub['t_low']}-{stub['t_high']}",
                                  "importance", fresh=True))
                 for stub, strategy in sweep(visited, config.importance.windows, full,
                                             config.importance_networks(slimmable.config.widths), diffusion.timesteps)]
        importance = importance_rows(cells, full_row, features[full_row["strategy"]],
                                     None if reference is None else reference(), seed=config.seed, device=device)
    return Study(rows, history, networks, features, importance)


def run(
    slimmable: nn.Module,
    others: Mapping[str, nn.Module],
    diffusion: Any,
    spec: Any,
    shape: Sequence[int],
    score: Callable[[Tensor], tuple[float, Tensor]],
    config: StepAwareConfig,
    *,
    quality_floor: float | None,
    reference: Callable[[], Tensor | None] | None = None,
    published: Mapping[str, Strategy] | None = None,
    device: torch.device | str = "cpu",
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    log: Callable[[str], None] = print,
) -> Result:
    """The study (:func:`run_study`) as a :class:`~missingu.task.Result`: rows = one per evaluation
    (without its per-step choices; ``quality_floor``, the real-vs-real value at ``samples``, beside
    each), tables ``history`` (the search's best objective per generation) and ``importance`` (the
    sweep's rows; none when it is off), files ``strategies`` (every strategy that is not a search
    candidate), ``strategy`` (the searched one) and ``features`` (the fresh evaluations' features by
    strategy, for the verdicts' intervals; the command adds the reference's), and the record (FLOPs
    per call of each network, evaluations, wall time). ``on_row(rows so far)`` as each strategy is scored."""
    import time

    def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "steps"} | {"quality_floor": quality_floor} for r in rows]

    start = time.perf_counter()
    study = run_study(slimmable, others, diffusion, spec, shape, score, config, reference=reference,
                      published=published, device=device,
                      on_row=None if on_row is None else (lambda so_far: on_row(table(so_far))), log=log)
    rows = study.rows
    searched = next(r for r in rows if r["kind"] == "search" and r["phase"] == "fresh")
    record = {"networks": {label(c): {"gflops_per_call": n.flops / 1e9} for c, n in study.networks.items()},
              "seconds": time.perf_counter() - start, "evaluations": len(rows) + len(study.importance),
              "searched": {k: searched[k] for k in ("mean_gflops", "saving", "quality")}}
    return Result(rows=table(rows), record=record, tables={"history": study.history, "importance": study.importance},
                  files={
        "strategies": {r["strategy"]: Strategy(r["steps"]).to_data() for r in rows if r["kind"] != "candidate"},
        "strategy": Strategy(searched["steps"]).to_data(),
        "features": {"strategies": study.features},
    })
