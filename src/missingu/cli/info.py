"""``missingu info``: parameters and FLOPs per call of the configured models at each dataset's shape."""

from __future__ import annotations

import argparse

from ..measure import count_parameters, measure_call
from ..models import model_from_spec
from . import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--dataset", help="only this dataset entry")
    p.add_argument("--model", help="only this model entry")


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    datasets = [cfg.dataset(args.dataset)] if args.dataset else list(cfg.datasets)
    models = [cfg.model(args.model)] if args.model else list(cfg.models)
    rows = []
    for data in datasets:
        shape = (data.channels, data.size, data.size)
        for spec in models:
            model = model_from_spec(spec, *shape[:2])
            cost = measure_call(model, shape)
            rows.append((spec.name, spec.arch, spec.preset, data.name, "x".join(map(str, shape)),
                         f"{count_parameters(model):,}", f"{cost.flops / 1e9:.3f}", f"{cost.macs / 1e9:.3f}",
                         "-" if cost.nfe is None else str(cost.nfe)))
    options.print_table(("model", "arch", "preset", "dataset", "CxHxW", "parameters", "GFLOPs/call",
                         "GMACs/call", "ODE evals/call"), rows)
