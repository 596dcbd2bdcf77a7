"""``missingu fetch-weights``: download the metric weights (LPIPS AlexNet, Inception) into TORCH_HOME."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import ConfigError
from ..io import save_json
from ..weights import DEFAULT_TORCH_HOME, WEIGHTS, WeightsUnavailable, fetch_weights, missing_weights, stage_hint
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--torch-home", type=Path, default=DEFAULT_TORCH_HOME, help="default %(default)s")
    p.add_argument("--weights", metavar="NAME,...", help=f"which (default all: {', '.join(WEIGHTS)})")
    p.add_argument("--status", type=Path, help="write what is present and what is missing (JSON)")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 when a file cannot be fetched (offline): metrics that need it say so")
    options.log(p)
    options.progress(p)


def run(args: argparse.Namespace) -> int:
    names = options.names(args.weights) or list(WEIGHTS)
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise ConfigError(f"--weights: unknown {unknown[0]!r}; allowed: {', '.join(WEIGHTS)}")
    problems = {}
    for name in names:
        try:
            fetch_weights([name], args.torch_home, progress=not args.no_progress)
        except WeightsUnavailable as err:
            problems[name] = str(err)
            log.warning("%s: %s", name, err)
    missing = set(missing_weights(names, args.torch_home))
    status = {name: {"file": WEIGHTS[name].file, "used_by": WEIGHTS[name].used_by, "present": name not in missing,
                     "note": problems.get(name, stage_hint(name, args.torch_home)) if name in missing else None}
              for name in names}
    if args.status:
        save_json({"torch_home": str(Path(args.torch_home).resolve()), "weights": status}, args.status)
    for name, entry in status.items():
        log.info("%s: %s", name, "present" if entry["present"] else entry["note"])
    if problems and not args.allow_missing:
        print(f"missingu: error: {len(problems)} weight file(s) could not be fetched; stage them by hand "
              f"(see above) or pass --allow-missing", file=sys.stderr)
        return 1
    return 0
