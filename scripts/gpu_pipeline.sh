#!/usr/bin/env bash
# The whole pipeline once on a GPU machine (issue 24, item 1), from the repository root:
#   scripts/gpu_pipeline.sh WORKDIR [CONFIG]
# CONFIG defaults to config/gpu_smoke.yaml (device: cuda, paper presets on the embedded photos,
# planned to fit 8 minutes on one GPU). If .whl/ holds wheels (scripts/gpu_wheels.py: what the
# GPU image lacks, for its Python 3.12), they are installed into /tmp/site first and put on
# PYTHONPATH and JUPYTER_PATH (nbconvert's templates and the python3 kernel live in their data
# files); WHEELS= (empty) skips that. Snakemake writes results/, logs/ and benchmarks/ under
# WORKDIR; EXTRA holds more Snakemake arguments (e.g. EXTRA="--config device=cpu").
set -u
exec 2>&1  # Snakemake's progress (stderr) beside the rest, in the one log the caller keeps
WORK=${1:?usage: scripts/gpu_pipeline.sh WORKDIR [CONFIG]}
CONFIG=$(realpath "${2:-config/gpu_smoke.yaml}")
PY=${PYTHON:-python3}
WHEELS=${WHEELS-.whl}
if [[ -n "$WHEELS" && -d "$WHEELS" ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "installing the wheels of $WHEELS failed" >&2; exit 3; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" JUPYTER_PATH=/tmp/site/share/jupyter PATH="/tmp/site/bin:$PATH"
fi
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
