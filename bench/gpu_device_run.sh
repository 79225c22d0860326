#!/usr/bin/env bash
# The whole GPU check as one call of the device tool (carry .devsite.tgz and artifacts/):
#   run: bash bench/gpu_device_run.sh [gpu_check.py's arguments, e.g. --parts=sweep --tag=-sweep]
# .devsite.tgz: ../shared/device/make-devsite grpcio greenlet filelock (the image lacks the trial
# processes' grpcio). The project is not installed there, so its conf/ package is linked by the
# name the wheel gives it. Results and every log go to $OUT; the check is cut at CHECK_S (540 s) so they come back.
mkdir -p /tmp/site && tar -C /tmp/site -xzf .devsite.tgz && export PYTHONPATH=/tmp/site; export PYTHONPATH=$PWD:$PYTHONPATH
ln -sfn "$PWD/conf" /tmp/site/qlora_sweep_conf
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/card.txt" 2>&1
python3 -c "import torch,transformers,peft,trl,bitsandbytes,optuna,grpc;print(torch.__version__,transformers.__version__,peft.__version__,trl.__version__,bitsandbytes.__version__,optuna.__version__)" > "$OUT/versions.txt" 2>&1
for m in scipy sklearn matplotlib; do python3 -c "import $m" 2>/dev/null && echo "$m present" >> "$OUT/versions.txt"; done
timeout "${CHECK_S:-540}" python3 bench/gpu_check.py --results "$OUT" "$@" > "$OUT/check.log" 2>&1; echo "gpu_check exit $?" >> "$OUT/check.log"
cp /tmp/gpu-check/*.log "$OUT/" 2>/dev/null
for f in /tmp/gpu-check/sweep/probe/*/trial.log; do [ -f "$f" ] && tail -c 20000 "$f" > "$OUT/probe-$(basename "$(dirname "$f")").log"; done
for d in sweep asha; do for f in /tmp/gpu-check/$d/trials/*/trial.log; do [ -f "$f" ] && n=$(basename "$(dirname "$f")") && tail -c 20000 "$f" > "$OUT/$d-trial-$n.log"; done; done
cat "$OUT/versions.txt"; grep -v "it/s\]" "$OUT/check.log" | tail -50
