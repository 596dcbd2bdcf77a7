"""The wheels the GPU machine lacks for the whole pipeline, downloaded into ``.whl/`` for ``carry``.

    .venv/bin/python scripts/gpu_wheels.py [--dest .whl] [--list]     (after pip install -e ".[test]")

The GPU machine (an offline CUDA image, Python 3.12) holds torch and most of the scientific stack
(``scripts/gpu_image_packages.txt``), not Snakemake, papermill, pymoo, lpips, torch-fidelity,
torchode or the reference ``denoising-diffusion-pytorch``. This walks the runtime requirements of
the project (its dependencies, the ``pipeline`` extra and the reference ``Unet``) through the
distributions installed here, with the markers evaluated for CPython 3.12 on x86-64 Linux, stops at
every package the image holds, and downloads the rest at the versions installed here (tested
together) as Python 3.12 manylinux wheels, building a wheel where PyPI has none. ``--list`` prints
the pinned names without downloading. The GPU side installs them with ``pip install --no-index
--no-deps --target`` (``scripts/measure_gpu.sh``, part ``pipeline``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "scripts" / "gpu_image_packages.txt"
# What the GPU machine's python3 is: requirement markers are evaluated for it, not for this Python.
TARGET = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "extra": "",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
EXTRA_TOPS = ["denoising-diffusion-pytorch"]  # the reference Unet `bench` measures beside ours


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    """The distributions the GPU image holds (one name per line; ``#`` starts a comment)."""
    lines = (line.split("#", 1)[0].strip() for line in IMAGE.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def project_requirements() -> list[str]:
    """The project's runtime requirement names: dependencies, the pipeline extra, the reference."""
    names = []
    for spec in md.requires("missingu") or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({**TARGET, "extra": "pipeline"}):
            names.append(req.name)
    return names + EXTRA_TOPS


def closure(tops: list[str], present: set[str]) -> dict[str, str]:
    """``{name: version installed here}`` of every requirement reachable from ``tops`` that is not
    in ``present``, following a requirement's extras (``bleach[css]`` needs tinycss2); what a
    package the image holds requires is that package's business."""
    found: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    todo = [(canonical(name), "") for name in tops]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done or name in present:
            continue
        done.add((name, extra))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            sys.exit(f"{name} is required but not installed here; install the project with "
                     f"pip install -e '.[test]' first")
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({**TARGET, "extra": extra}):
                todo += [(canonical(req.name), e) for e in ("", *sorted(req.extras))]
    return dict(sorted(found.items()))


def download(pins: dict[str, str], dest: Path) -> None:
    """Each pin as a CPython 3.12 manylinux wheel, or a wheel built from its sdist (pure Python)."""
    dest.mkdir(exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, version in pins.items():
        pin = f"{name}=={version}"
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), pin],
            capture_output=True, text=True)
        if got.returncode != 0:
            print(f"{pin}: no wheel for CPython 3.12 on PyPI; building one from its sdist", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, pin],
                               check=True)
                built = list(Path(tmp).glob("*.whl"))
                if not all(w.name.endswith("-none-any.whl") for w in built):
                    sys.exit(f"{pin}: the wheel built here is not pure Python ({built}); it would not run there")
                for wheel in built:
                    wheel.replace(dest / wheel.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--list", action="store_true", help="print the pins, download nothing")
    args = parser.parse_args()
    pins = closure(project_requirements(), image_packages())
    if args.list:
        print("\n".join(f"{name}=={version}" for name, version in pins.items()))
        return
    download(pins, args.dest)
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(pins)} packages, {len(wheels)} wheels, {size:.1f} MiB in {args.dest}")


if __name__ == "__main__":
    main()
