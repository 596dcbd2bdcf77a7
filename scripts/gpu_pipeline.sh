#!/usr/bin/env bash
# The whole pipeline once on a GPU machine (issue 24, item 1), from the repository root:
#   scripts/gpu_pipeline.sh WORKDIR [CONFIG]
# CONFIG defaults to config/gpu_smoke.yaml (device: cuda, paper presets on the embedded photos,
# planned to fit 8 minutes on one GPU). If .whl/ holds wheels (scripts/gpu_wheels.py: what the
# GPU image lacks, for its Python 3.12), scripts/gpu_site.sh installs them into /tmp/site first
# and puts them on PYTHONPATH and JUPYTER_PATH; WHEELS= (empty) skips that. Snakemake writes results/, logs/ and benchmarks/ under
# WORKDIR; EXTRA holds more Snakemake arguments (e.g. EXTRA="--config device=cpu").
set -u
exec 2>&1  # Snakemake's progress (stderr) beside the rest, in the one log the caller keeps
WORK=${1:?usage: scripts/gpu_pipeline.sh WORKDIR [CONFIG]}
CONFIG=$(realpath "${2:-config/gpu_smoke.yaml}")
PY=${PYTHON:-python3}
# shellcheck source=scripts/gpu_site.sh
source "$(dirname "$0")/gpu_site.sh" || { echo "installing the wheels of ${WHEELS:-.whl} failed"; exit 3; }
mkdir -p "$WORK"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'no cuda',
          torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
"$PY" -m snakemake --version
# --keep-going: a stage that fails on CUDA leaves every stage that does not need it measured.
# shellcheck disable=SC2086
"$PY" -m snakemake --snakefile "$PWD/Snakefile" --directory "$WORK" --configfile "$CONFIG" \
  --cores all --keep-going --printshellcmds ${EXTRA:-}
status=$?
"$PY" -m snakemake --snakefile "$PWD/Snakefile" --directory "$WORK" --configfile "$CONFIG" \
  --summary ${EXTRA:-} > "$WORK/summary.tsv" 2>/dev/null
exit $status
