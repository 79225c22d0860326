#!/usr/bin/env bash
# The GPU check of the one-trial foundation, in one call of the device tool:
#   mkdir -p /tmp/site && tar -C /tmp/site -xzf .devsite.tgz && export PYTHONPATH=/tmp/site; bash bench/gpu_trial_check.sh
# (1) do the project's imports initialise CUDA? (2) one 4-bit and one 8-bit `python -m trainers`
# trial of a random-init Llama-3.1-8B-shaped model. SMALL=1 dry-runs it on a CPU with a 2-layer model.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
MODEL=/tmp/llama8b-random
EXTRA=()
if [ "${SMALL:-0}" = 1 ]; then EXTRA=(train.optim=adamw_torch train.gradient_checkpointing=false); fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"; 
  $PY -c "import sys, torch, transformers, peft, trl, bitsandbytes as b, datasets, optuna, wandb; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'bitsandbytes', b.__version__)"; } | tee "$OUT/env.txt"
$PY bench/cuda_import_check.py 2>&1 | grep '^after' | tee "$OUT/cuda_import.txt"
$PY bench/random_model.py "$MODEL" --tokenizer artifacts/tiny-llama ${SMALL:+$( [ "$SMALL" = 1 ] && echo --small)} | tee "$OUT/random_model.txt"

for bits in 4 8; do
  start=$(date +%s)
  $PY -m trainers model.name_or_path="$MODEL" model.build=null quant.bits=$bits train=gpu \
    train.max_steps=40 train.eval_steps=20 train.logging_steps=10 data.eval_size=64 \
    tracking.mode=offline output_dir=/tmp/trial-$bits cache_dir=/tmp/qs-cache "${EXTRA[@]}" \
    > "$OUT/trial-$bits.log" 2>&1
  rc=$?
  echo "quant.bits=$bits exit $rc wall $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
  grep -E "eval_loss|Error|error" "$OUT/trial-$bits.log" | grep -v "it/s" | tail -5
  cp /tmp/trial-$bits/metrics.json "$OUT/metrics-$bits.json" 2>/dev/null && cat "$OUT/metrics-$bits.json"
  ls /tmp/trial-$bits/adapter_model.safetensors 2>/dev/null && du -h /tmp/trial-$bits/adapter_model.safetensors
done
