#!/usr/bin/env bash
# One GPU session, at most 12 minutes: every MHSA kernel's exactness in bf16 on CUDA and the fastest
# per case, a 2-process NCCL DDP step, Table 14's T7@384 vs EfficientNet-B7@600 train step,
# Table 1's BoT50 vs R50 Mask R-CNN step at 1024, and timm's BoTNet family from timm and from us on
# the same weights in bf16, eager and torch.compile (issue 22); then the "GPU check" section of
# docs/benchmarks.md.
#
#   bash benchmarks/gpu_check.sh                    # on a machine with a GPU
#   bash benchmarks/gpu_check.sh --device cpu --tiny   # dry run on CPU (toy sizes, document untouched)
#
# Each part runs under its own time limit (the sum is 715 s); one that fails or times out is named
# in the section, the others still report. Results and logs: $GPU_CHECK_OUT (default $OUT/gpu_check
# or /tmp/gpu_check). PYTHON: the interpreter (default python).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RES=${GPU_CHECK_OUT:-${OUT:-/tmp}/gpu_check}
mkdir -p "$RES"
rm -f "$RES"/*.json "$RES"/*.rc  # no stale result from an earlier run
ARGS=("$@")
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
SCALE=1
case " $* " in *" --tiny "*) SCALE=3 ;; esac  # the CPU dry run gets 3x the limits (slow CPUs, not the budget)

part() {  # part NAME STEM LIMIT_S COMMAND...: run with a time limit; exit status into STEM.rc
  local name=$1 stem=$2 limit=$(( $3 * SCALE )); shift 3
  echo "== $name (limit ${limit} s)"
  timeout -k 5 "$limit" "$@" >"$RES/$stem.log" 2>&1
  local rc=$?
  echo "$rc" >"$RES/$stem.rc"
  echo "   exit $rc after $(( $(date +%s) - START )) s in all; log: $RES/$stem.log"
  tail -n 3 "$RES/$stem.log" | cut -c1-300
  return 0
}

part kernels kernels 200 "$PY" benchmarks/gpu_check.py kernels "${ARGS[@]}" --json "$RES/kernels.json"
part nccl nccl 45 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
  benchmarks/gpu_check.py nccl "${ARGS[@]}" --json "$RES/nccl.json"
if [ "$(cat "$RES/nccl.rc")" != 0 ]; then
  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): check the NCCL path with one rank
  ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
  if [ "$ngpu" -lt 2 ]; then
    mv "$RES/nccl.log" "$RES/nccl_2proc.log"
    part "nccl (1 process; $ngpu GPU)" nccl 30 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 \
      benchmarks/gpu_check.py nccl "${ARGS[@]}" --json "$RES/nccl.json"
  fi
fi
part t7-vs-b7 t7_b7 110 "$PY" benchmarks/gpu_check.py t7-vs-b7 "${ARGS[@]}" --json "$RES/t7_b7.json"
part maskrcnn maskrcnn 90 "$PY" benchmarks/gpu_check.py maskrcnn "${ARGS[@]}" --json "$RES/maskrcnn.json"
part vs-timm vs_timm 240 "$PY" benchmarks/gpu_check.py vs-timm "${ARGS[@]}" --json "$RES/vs_timm.json"
"$PY" benchmarks/gpu_check.py report "${ARGS[@]}" --results "$RES"
rc=$?
echo "gpu_check: $(( $(date +%s) - START )) s; results in $RES"
exit $rc
