"""``missingu`` command line: one command per pipeline step, explicit paths, one config file.

    missingu prepare-data --config C --dataset D --split train --out data.pt
    missingu train        --config C --dataset D --model M --out-dir DIR [--data data.pt]
    missingu sample       --config C --checkpoint DIR/ema.pt --sampler S --out samples.pt [--grid g.png]
                          [--strategy s.yaml --mix cunet=ema.pt]
    missingu info         --config C [--dataset D] [--model M]
    missingu profile      --config C --out efficiency.csv [--checkpoint D/M=ema.pt ...] [--models M,..]
                          [--shapes 3x64x64,..] [--merge]
    missingu bench        --config C --out bench.csv [--models M,..] [--variants eager,autocast+compile,..]
                          [--parts train,call,sample] [--peak-tflops 989]
    missingu denoise      --config C --checkpoint DIR/ema.pt --data test.pt --out denoise.csv
                          [--torch-home resources/torch_home]
    missingu fetch-weights [--torch-home resources/torch_home] [--weights lpips_alex,inception]
    missingu train-classifier --config C --data train.pt --test test.pt --out classifier.pt
    missingu evaluate     --config C --samples S.pt --classifier classifier.pt --data train.pt --test test.pt
                          --out quality.json [--torch-home resources/torch_home]
    missingu stepaware    --config C --checkpoint ddsm=ema.pt [--checkpoint cunet=ema.pt] --classifier classifier.pt
                          --data train.pt --test test.pt --out stepaware.csv
    missingu claims       --claims-file config/paper_claims.yaml --table denoise=denoise_vs_claims.csv ...
                          --out claims.csv
    missingu plan         --config C [--devices 8] [--bench results/measured/h100/bench_train.csv] [--totals]

``--config-json '{...}'`` gives the config inline instead of a file (the pipeline passes each
step only the config entries it depends on, so Snakemake reruns exactly what changed).

``--set key.sub=value`` overrides any config key (list entries by name:
``--set models.unet.preset=tiny``). Errors in the config are reported before any work.

Each command is a module of this package with ``add_arguments(parser)`` and ``run(args)``;
:data:`COMMANDS` lists them with their help. Options several commands share are defined once in
:mod:`.options`. Files a command writes beside its ``--out`` (its sidecars) default to the names
its stage's ``SIDECARS`` state, and each can be given explicitly, as the pipeline does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from .. import __version__
from ..config import ConfigError
from ..io import InputFileError
from ..specs.data import DatasetUnavailable
from ..specs.train import TrainingDiverged

# Every command by the name it is called with, with its one-line help, in the order `missingu
# --help` lists them. Each is the module of this package of the same name (``-`` as ``_``),
# imported only when its command runs (or its arguments are listed), so `missingu --help` and
# `missingu plan` start without torch.
COMMANDS: dict[str, str] = {
    "prepare-data": "read (download) a dataset split into one file",
    "train": "train one model on one dataset (resumes from OUT_DIR/resume.pt)",
    "sample": "draw samples from a trained model",
    "profile": "measure parameters, FLOPs, NFE, latency and memory (CSV)",
    "bench": "training images/s, FLOPs utilisation, memory, sampling latency (CSV)",
    "stepaware": "step-aware sampling: baselines, an evolutionary search and which steps matter (DDSM)",
    "denoise": "a trained model as a Gaussian denoiser: PSNR, SSIM, LPIPS per noise level",
    "train-classifier": "the small classifier of the classifier Frechet distance",
    "evaluate": "sample quality: FID/KID and the classifier Frechet distance (JSON)",
    "fetch-weights": "download the metric weights (LPIPS AlexNet, Inception) into TORCH_HOME",
    "info": "parameters and FLOPs of the configured models",
    "claims": "merge every stage's claim verdicts into one claims table (CSV and Markdown)",
    "plan": "what a config will cost before it runs: every job's estimated device-hours, totals per stage",
}
# Errors a user can fix (a config, an input file, a dataset or weights to stage): one line, exit 1.
USER_ERRORS = (ConfigError, DatasetUnavailable, FileNotFoundError, InputFileError, TrainingDiverged)


def command(name: str) -> ModuleType:
    """The module of command ``name`` (its help is in :data:`COMMANDS`): ``add_arguments(parser)``
    and ``run(args)``."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def _setup(args: argparse.Namespace) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if getattr(args, "log", None):
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``missingu`` parser: one subcommand per entry of :data:`COMMANDS`, with the arguments of
    ``commands`` (``None``: all; the others are listed with their help alone)."""
    load = set(COMMANDS if commands is None else commands)
    ap = argparse.ArgumentParser(prog="missingu", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=f"missingu {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name in load:
            module = command(name)
            module.add_arguments(p)
            p.set_defaults(fn=module.run)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)  # the command, if any is named
    args = parser([chosen] if chosen in COMMANDS else []).parse_args(argv)
    args.argv = argv
    for key in ("num_samples", "batch_size", "threads", "grid_size"):
        value = getattr(args, key, None)
        if value is not None and value <= 0:
            print(f"missingu: error: --{key.replace('_', '-')} must be positive, got {value}", file=sys.stderr)
            return 2
    _setup(args)
    try:
        code = args.fn(args)
    except USER_ERRORS as err:
        print(f"missingu: error: {err}", file=sys.stderr)
        if getattr(args, "log", None):
            with open(args.log, "a") as fh:
                fh.write(f"missingu: error: {err}\n")
        return 1
    return code or 0


__all__ = ["COMMANDS", "command", "main", "parser"]
