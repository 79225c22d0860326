#!/usr/bin/env bash
# GPU check of trials side by side (issue 7): an 8B-shaped random-init Llama; the same four trials
# (r 16/32 x 4-bit/8-bit, pruning off) swept one at a time (trials_per_device=1), packed
# (trials_per_device=auto, which measures the hungriest trial first), and packed with the per-device
# batch left to the sweep (per_device_train_batch_size=auto); nvidia-smi sampled per
# process meanwhile. Writes $OUT/packing.md and packing.json (bench/packing_report.py).
# On the device tool, in one call (carry .devsite.tgz, built by ../shared/device/make-devsite):
#   mkdir -p /tmp/site && tar -C /tmp/site -xzf .devsite.tgz && export PYTHONPATH=/tmp/site; bash bench/gpu_packing_check.sh
# CPU dry run of the whole script (small shape, 4 steps): SMALL=1 bash bench/gpu_packing_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-packing-out}
WORK=${WORK:-/tmp/gpu-packing}
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
STEPS=${STEPS:-20}
MODEL=$WORK/random-llama
start=$(date +%s)
$PY -m trainers.tiny_model artifacts/tiny-llama | tail -1         # its tokenizer, for the random model
$PY bench/random_model.py "$MODEL" --tokenizer artifacts/tiny-llama ${SMALL:+--small}
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1; } > "$OUT/card.txt"
[ -s "$OUT/card.txt" ] || echo cpu > "$OUT/card.txt"
: > "$OUT/gpu_samples.txt"
( while true; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader >> "$OUT/gpu_samples.txt" 2>/dev/null
    sleep 1; done ) &
sampler=$!
trials='[{lora_r: 16, lora_alpha: 32, lora_dropout: 0.1, quant_bits: 4, learning_rate: 0.0001}, {lora_r: 16, lora_alpha: 32, lora_dropout: 0.1, quant_bits: 8, learning_rate: 0.0001}, {lora_r: 32, lora_alpha: 64, lora_dropout: 0.1, quant_bits: 4, learning_rate: 0.0001}, {lora_r: 32, lora_alpha: 64, lora_dropout: 0.1, quant_bits: 8, learning_rate: 0.0001}]'
common=("model.name_or_path=$MODEL" model.build=null train=gpu "train.max_steps=$STEPS" "train.eval_steps=$STEPS"
        train.logging_steps=5 data.eval_size=16 sweep.pruner=none sweep.n_trials=4 sweep.checkpoints=false
        tracking.mode=disabled "sweep.enqueue=$trials")
if [ -n "${SMALL:-}" ]; then  # CPU: no paged optimizer, smaller batches
  common+=(train.optim=adamw_torch train.per_device_train_batch_size=2 train.per_device_eval_batch_size=2 "train.max_steps=4" "train.eval_steps=4")
fi
# The per-device batch: the config's 8 x 2 accumulation for the first two; auto (the sweep picks it
# for an effective batch of 16, measured at 1 and 16 rows) for the third.
auto_batch=(train.per_device_train_batch_size=auto train.effective_batch_size=16)
[ -n "${SMALL:-}" ] && auto_batch=(train.per_device_train_batch_size=auto train.effective_batch_size=4)
for k in 1 auto auto-batch; do
  dir=$WORK/pack-$k
  rm -rf "$dir"
  t0=$(date +%s)
  if [ $k = auto-batch ]; then extra=(sweep.trials_per_device=auto "${auto_batch[@]}"); else extra=("sweep.trials_per_device=$k"); fi
  $PY -m sweeper "${common[@]}" "${extra[@]}" "sweep.study_name=pack-$k" "sweep.dir=$dir" > "$WORK/pack-$k.log" 2>&1
  echo "trials_per_device=$k: exit $? wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/walls.txt"
  cp "$WORK/pack-$k.log" "$dir/sweep.log"; grep -v "it/s" "$WORK/pack-$k.log" | tail -12 > "$OUT/pack-$k.tail.txt"
done
kill $sampler
$PY bench/packing_report.py "$OUT" "$MODEL" "$WORK/pack-1" "$WORK/pack-auto" "$WORK/pack-auto-batch"
echo "whole check: $(( $(date +%s) - start )) s" | tee -a "$OUT/walls.txt"
