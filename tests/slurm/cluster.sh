#!/usr/bin/env bash
# A real two-node SLURM cluster on this one host, for the tests: `cluster.sh start DIR` writes
# slurm.conf and gres.conf under DIR, starts munged, slurmctld and two slurmd (n1, n2) directly
# (no systemd) and waits until both nodes are idle; `cluster.sh stop DIR` stops them by pid.
# Clients find it with SLURM_CONF=DIR/slurm.conf. Needs root and Debian's slurm-wlm and munge.
set -euo pipefail
cmd=${1:?start or stop}; dir=$(realpath -m "${2:?a folder}")
pids="$dir/pids"

stop() {
  [ -f "$pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$pids"
  for _ in $(seq 50); do
    alive=0; while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$pids"
    [ $alive = 0 ] && break; sleep 0.1
  done
  while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$pids"
  rm -f "$pids"
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
stop
mkdir -p "$dir"/{state,spool/n1,spool/n2,log,munge,dev}
chmod 700 "$dir/munge"
# Fake GPUs: device files SLURM hands out as gres (a trial finds no CUDA behind them and runs on the CPU).
for i in 0 1; do [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 195 "$i"; done
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=qlora-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=10
InactiveLimit=0
SlurmdTimeout=30
NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[16818-16819] CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES LLN=YES
CONF
cat > "$dir/gres.conf" <<CONF
NodeName=n[1-2] Name=gpu File=$dir/dev/nvidia[0-1]
CONF
export SLURM_CONF="$dir/slurm.conf"
: > "$pids"
munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
cat "$dir/munge/munged.pid" >> "$pids"
slurmctld -i -L "$dir/log/slurmctld.log"   # -i: ignore state from an earlier start
for _ in $(seq 100); do [ -s "$dir/slurmctld.pid" ] && break; sleep 0.1; done
cat "$dir/slurmctld.pid" >> "$pids"
for n in n1 n2; do
  slurmd -N "$n" -L "$dir/log/slurmd-$n.log"
  for _ in $(seq 100); do [ -s "$dir/slurmd-$n.pid" ] && break; sleep 0.1; done
  cat "$dir/slurmd-$n.pid" >> "$pids"
done
for _ in $(seq 150); do
  [ "$(sinfo -h -N -o '%N %t' | grep -c ' idle')" = 2 ] && { sinfo -N; exit 0; }
  sleep 0.2
done
echo "the test cluster did not come up; logs in $dir/log" >&2
sinfo -N >&2 || true
exit 1
