#!/usr/bin/env bash
# The GPU measurements of results/measured/<gpu>/, in parts that each write their rows as they go:
#   scripts/measure_gpu.sh OUT_DIR [SECONDS]
# run from the repository root on a CUDA machine (PYTHONPATH=src is set here; the package's
# dependencies must be importable). Each part has its own time limit, the last one takes what is
# left of SECONDS (default 580); a part that fails or runs out of time leaves the others' files.
# PARTS picks parts by name (default: checks,inference,train,profile,compile); also:
#   ops      where a call (batch 64) and a training step (batch 128) spend their time, per operator
#            and operator class (torch.profiler), our U-Net beside the reference Unet, fp32 and bf16
#   batch1   one call at batch 1 of the U-Net and the cU-Net with CUDA graphs: eager, compiled, and
#            (the cU-Net) its ODE functions compiled alone
#   compile_ode  the cU-Net's training and calls with its ODE functions compiled alone
#   curve    the 1,000-step loss curves of our U-Net and the reference Unet (same data, seed, recipe)
#   pipeline the whole DAG on CUDA (scripts/gpu_pipeline.sh, config/gpu_smoke.yaml) in OUT_DIR/pipeline
# WHEELS=DIR (default .whl, if it exists; WHEELS= skips) holds wheels the machine lacks
# (scripts/gpu_wheels.py): installed first by scripts/gpu_site.sh into /tmp/site, on PYTHONPATH.
# TAR=FILE packs OUT_DIR into one FILE (.tar.gz; checkpoints and prepared data left out) after every
# part, for a machine that returns only a few files: TAR=$OUT/measured.tar.gz scripts/measure_gpu.sh /tmp/m
set -u
OUT=${1:?usage: scripts/measure_gpu.sh OUT_DIR [SECONDS]}
BUDGET=${2:-580}
CFG=${CFG:-config/paper.yaml}
MODELS=${MODELS:-unet,cunet}
PARTS=${PARTS:-checks,inference,train,profile,compile}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) +$(( $(date +%s) - START ))s $*" | tee -a "$OUT/log.txt"; }
# part NAME LIMIT_S STDOUT_FILE CMD...
part() {
  local name=$1 limit=$2 out=$3; shift 3
  [[ ",$PARTS," == *",$name,"* ]] || return 0
  local left=$(( START + BUDGET - $(date +%s) ))
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then log "skip $name: ${left}s left"; return; fi
  log "start $name (limit ${limit}s)"
  timeout "$limit" "$@" >> "$out" 2>> "$OUT/log.txt"
  log "end $name: exit $?"
  pack
}
pack() {
  [[ -n "${TAR:-}" ]] || return 0
  tar -czf "$TAR.part" --exclude='*.pt' --exclude='*/results/data' --exclude='.snakemake' -C "$OUT" . && mv "$TAR.part" "$TAR"
}
log "wheels: ${WHEELS-.whl}"
# shellcheck source=scripts/gpu_site.sh
source scripts/gpu_site.sh >> "$OUT/log.txt" 2>&1 || log "installing the wheels failed"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >> "$OUT/log.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >> "$OUT/log.txt" 2>&1

part checks 60 "$OUT/checks.jsonl" "$PY" scripts/gpu_checks.py --only batches,solver,graphs,sdpa
part inference 170 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models "$MODELS" --parts call,sample \
  --variants eager,autocast,autocast+channels_last,cuda_graphs,autocast+channels_last+cuda_graphs,autocast+channels_last+cuda_graphs+sdpa \
  --out "$OUT/bench_inference.csv"
part train 120 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models "$MODELS" --parts train \
  --variants autocast,autocast+fused_adamw,autocast+channels_last,autocast+data_on_device,autocast+sdpa,autocast+channels_last+fused_adamw+data_on_device+sdpa \
  --out "$OUT/bench_train.csv"
part profile 110 "$OUT/log.txt" "$PY" -m missingu.cli profile --config "$CFG" --shapes "${PROFILE_SHAPE:-3x64x64}" \
  --set profile.sample_batch=1 --out "$OUT/profile.csv" --no-progress
part compile 600 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models "$MODELS" --parts train,call \
  --variants autocast+channels_last+fused_adamw+data_on_device+sdpa+compile --out "$OUT/bench_compile.csv"
part ops 150 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models unet --parts ops \
  --variants eager,autocast --set "bench.call_batches=[64]" --set bench.train_batch=128 --out "$OUT/bench_ops.csv"
part batch1 300 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models unet,cunet --parts call \
  --variants autocast+channels_last+cuda_graphs,autocast+channels_last+cuda_graphs+compile_ode,autocast+channels_last+cuda_graphs+compile \
  --set "bench.call_batches=[1]" --out "$OUT/bench_batch1.csv"
part compile_ode 240 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models cunet --parts train,call \
  --variants autocast+channels_last+fused_adamw+data_on_device+sdpa+compile_ode --out "$OUT/bench_compile_ode.csv"
part curve 300 "$OUT/log.txt" "$PY" -m missingu.cli bench --config "$CFG" --models unet --parts curve \
  --variants autocast+fused_adamw+data_on_device --set bench.curve_data=${CURVE_DATA:-photos} --out "$OUT/bench_curve.csv"
part pipeline 560 "$OUT/pipeline.log" scripts/gpu_pipeline.sh "$OUT/pipeline" "${PIPELINE_CFG:-config/gpu_smoke.yaml}"
log "done"
pack
