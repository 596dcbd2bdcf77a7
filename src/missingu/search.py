"""The step-aware study's search: pymoo over integer genes, each naming one network (a category).

A gene is the index of a network choice (a width of the slimmable model, or a mixed-in model).
The indices carry no order (the cU-Net appended after width 0.25 is not "next to" it), so genes
are sampled, crossed and mutated as categories: a gene of a child is always one of its parents'
genes at that position, and a mutated gene is drawn afresh and uniformly from every choice.
Three modes (``stepaware.objective``):

* ``single``: a genetic algorithm (pymoo ``GA``) on ``quality + flops_weight x mean GFLOPs``,
  uniform crossover (each gene from either parent with probability 1/2);
* ``pareto``: NSGA-II on ``(quality, mean GFLOPs)``, uniform crossover, returning the Pareto front;
* ``ddsm``: the search as DDSM's authors ran it (EnVision-Research/DDSM, ``main.py``, ``search()``):
  NSGA-II on the one scalar objective ``quality + flops_weight x mean GFLOPs``, single-point
  crossover (one cut, each child one parent's genes before it and the other's after it), and a
  first population made of every uniform strategy (one per choice) followed by random ones.

Every mode mutates by uniform reset (:class:`UniformReset`: each gene with probability ``p``,
``stepaware.mutation``, default ``min(0.5, 1 / genes)``; DDSM's runs used ``p = 0.001``) and discards
duplicate genomes; ``single`` and ``pareto`` seed the first population with the uniform strategies
and any ``initial`` genes (the hand-made rule) before random ones. :func:`genes_to_choices` turns
a genome (one gene per block of ``block`` visited steps) into one choice per visited step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.operators.crossover.pntx import SinglePointCrossover
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.sampling.rnd import IntegerRandomSampling

from .config import ConfigError, choose

T = TypeVar("T")

OBJECTIVES = {"single": "single", "pareto": "pareto", "ddsm": "ddsm"}


@dataclass
class SearchResult:
    """The best genes (one scalar objective) or the Pareto front (two objectives), with each
    generation's best objective value(s) (``history``) and every evaluation."""

    best: list[list[int]]
    objectives: list[list[float]]
    history: list[list[float]] = field(default_factory=list)
    evaluations: int = 0


def _generator(random_state: Any) -> np.random.Generator:
    """pymoo 0.6.2 passes its seeded generator to every operator; 0.6.1 seeds numpy's global one
    from ``minimize(seed=...)`` instead, so a generator drawn from that is seeded too."""
    return random_state if random_state is not None else np.random.default_rng(np.random.randint(2**31))


def crossover(objective: str) -> Crossover:
    """The mode's crossover, both of which only exchange genes: single-point for ``ddsm`` (DDSM's:
    one cut, contiguous segments of each parent), uniform for ``single`` and ``pareto``."""
    choose(OBJECTIVES, objective, "objective", "stepaware.objective")
    return SinglePointCrossover() if objective == "ddsm" else UniformCrossover()


class UniformReset(Mutation):
    """Uniform-reset mutation of categorical genes: each gene independently, with probability
    ``prob_var`` (``None``: pymoo's ``min(0.5, 1 / genes)``), is replaced by a value drawn
    uniformly from all of ``[xl, xu]``, its own value included (so it changes with probability
    ``p (k - 1) / k`` for ``k`` choices), as DDSM's mutation does. pymoo's ``ChoiceRandomMutation``
    does the same but needs a mixed-variable problem (dict individuals); this one works on the
    integer arrays of a plain problem."""

    def _do(self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        xl, xu = problem.bounds()
        rng = _generator(random_state)
        reset = rng.random(X.shape) < float(self.get_prob_var(problem))
        drawn = rng.integers(np.broadcast_to(xl, X.shape), np.broadcast_to(xu, X.shape) + 1)
        return np.where(reset, drawn, X).astype(X.dtype)


class FirstPopulation(IntegerRandomSampling):
    """The first population: ``rows`` first (at most the population), the rest drawn uniformly
    per gene from ``[xl, xu]`` (pymoo's ``IntegerRandomSampling``, categorical)."""

    def __init__(self, rows: Sequence[Sequence[int]], genes: int) -> None:
        super().__init__()
        self.rows = np.asarray(rows, dtype=int).reshape(-1, genes)

    def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        rows = self.rows[:n_samples]
        rest = super()._do(problem, n_samples - len(rows), random_state=_generator(random_state))
        return np.vstack([rows, np.asarray(rest, dtype=int).reshape(-1, problem.n_var)])


def first_rows(objective: str, genes: int, options: int, population: int,
               initial: Sequence[Sequence[int]] = ()) -> list[list[int]]:
    """The seeded part of the first population: every uniform strategy (one per choice), then
    (``single``, ``pareto``) the ``initial`` genes; the rest of the population is random. The
    ``ddsm`` mode needs ``population >= options`` (its first population holds every uniform
    strategy, as DDSM asserts) and takes no ``initial`` genes."""
    uniform = [[i] * genes for i in range(options)]
    if objective != "ddsm":
        return (uniform + [list(g) for g in initial])[:population]
    if initial:
        raise ValueError("the ddsm search's first population is DDSM's: uniform strategies and random ones")
    check_population(objective, options, population)
    return uniform


def check_population(objective: str, options: int, population: int, key: str = "stepaware") -> None:
    """The ``ddsm`` mode's first population holds every uniform strategy, one per network choice:
    ``population`` must be at least ``options`` (as DDSM asserts); the other modes take any."""
    if objective == "ddsm" and population < options:
        raise ConfigError(f"{key}.population: {population} is fewer than the {options} networks; the ddsm "
                          "search's first population holds every uniform strategy")


def search(
    genes: int,
    options: int,
    evaluate: Callable[[list[int]], tuple[float, float]],
    *,
    objective: str = "single",
    flops_weight: float = 0.5,
    population: int = 8,
    generations: int = 4,
    seed: int = 0,
    mutation: float | None = None,
    initial: Sequence[Sequence[int]] = (),
) -> SearchResult:
    """Minimise over integer genes ``g`` (each in ``[0, options)``, a category) with pymoo.

    ``evaluate(g) -> (quality, mean_gflops)``, lower is better for both, called once per distinct
    genome. ``objective`` picks the mode (module docstring); ``mutation`` is the per-gene reset
    probability (``None``: ``min(0.5, 1 / genes)``); ``initial`` genes join the uniform strategies in the
    first population of the ``single`` and ``pareto`` modes."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.algorithms.soo.nonconvex.ga import GA
    from pymoo.core.problem import ElementwiseProblem
    from pymoo.optimize import minimize

    choose(OBJECTIVES, objective, "objective", "stepaware.objective")
    cache: dict[tuple[int, ...], tuple[float, float]] = {}

    def cached(g: list[int]) -> tuple[float, float]:
        key = tuple(g)
        if key not in cache:
            cache[key] = evaluate(list(key))
        return cache[key]

    n_obj = 2 if objective == "pareto" else 1

    class Problem(ElementwiseProblem):
        def __init__(self) -> None:
            super().__init__(n_var=genes, n_obj=n_obj, xl=0, xu=options - 1, vtype=int)

        def _evaluate(self, x: Any, out: dict, *args: Any, **kwargs: Any) -> None:
            quality, gflops = cached([int(v) for v in x])
            out["F"] = [quality + flops_weight * gflops] if n_obj == 1 else [quality, gflops]

    operators = dict(sampling=FirstPopulation(first_rows(objective, genes, options, population, initial), genes),
                     crossover=crossover(objective),
                     mutation=UniformReset(prob_var=mutation), eliminate_duplicates=True)
    algorithm = GA(pop_size=population, **operators) if objective == "single" else NSGA2(pop_size=population,
                                                                                          **operators)
    res = minimize(Problem(), algorithm, ("n_gen", generations), seed=seed, save_history=True, verbose=False)
    history = [[float(v) for v in np.atleast_2d(h.opt.get("F")).min(axis=0)] for h in res.history]
    best = np.atleast_2d(res.X).astype(int).tolist()
    return SearchResult(best, np.atleast_2d(res.F).tolist(), history, len(cache))


def genes_to_choices(genes: Sequence[int], choices: Sequence[T], visited: int, block: int) -> list[T]:
    """One choice per visited step from one gene per block of ``block`` visited steps."""
    return [choices[genes[min(i // block, len(genes) - 1)]] for i in range(visited)]


def gene_count(visited: int, block: int) -> int:
    """Genes of a strategy over ``visited`` steps, one per block of ``block`` steps."""
    return math.ceil(visited / block)
