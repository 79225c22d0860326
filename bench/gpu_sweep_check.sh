#!/usr/bin/env bash
# GPU check of the sweep, in one call of the device tool:
#   mkdir -p /tmp/site && tar -C /tmp/site -xzf .devsite.tgz && export PYTHONPATH=/tmp/site; bash bench/gpu_sweep_check.sh
# Runs the embedded demo sweep (N trials) on the GPU and samples nvidia-smi meanwhile: the sweep
# process itself must never hold a CUDA context; its trial processes do.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-sweep-check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
start=$(date +%s)
$PY -m sweeper tracking.mode=offline sweep.study_name=gpu-demo sweep.dir=/tmp/gpu-demo "sweep.n_trials=${N:-4}" \
  > "$OUT/sweep.log" 2>&1 &
pid=$!
: > "$OUT/cuda_apps.txt"
while kill -0 $pid 2>/dev/null; do
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader >> "$OUT/cuda_apps.txt" 2>/dev/null
  sleep 2
done
wait $pid
rc=$?
cut -d, -f1 "$OUT/cuda_apps.txt" | tr -d ' ' | sort -u | grep -v '^$' > "$OUT/cuda_pids.txt"
{
  echo "sweep pid $pid exit $rc wall $(( $(date +%s) - start )) s"
  if [ ! -s "$OUT/cuda_pids.txt" ]; then echo "nvidia-smi listed no compute processes: cannot tell who held CUDA"
  elif grep -qx "$pid" "$OUT/cuda_pids.txt"; then echo "the sweep process HELD a CUDA context"
  else echo "the sweep process never held a CUDA context; $(wc -l < "$OUT/cuda_pids.txt") trial processes did"; fi
} | tee "$OUT/summary.txt"
grep -v "it/s" "$OUT/sweep.log" | tail -16
