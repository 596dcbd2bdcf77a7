# Sourced by scripts/measure_gpu.sh and scripts/gpu_pipeline.sh: the wheels in WHEELS (default .whl,
# when it exists; WHEELS= skips) installed into /tmp/site, put on PYTHONPATH (only packages the
# GPU image lacks: none shadows one of its own), JUPYTER_PATH (nbconvert's templates and the
# python3 kernel are data files of the wheels) and PATH. Returns 3 when the install fails. Sets
# WHEELS= once installed, so a script started from here does not install them again.
WHEELS=${WHEELS-.whl}
if [[ -n "$WHEELS" && -d "$WHEELS" ]]; then
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || return 3
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/site" JUPYTER_PATH=/tmp/site/share/jupyter \
    PATH="$PATH:/tmp/site/bin" WHEELS=
fi
return 0
