#!/usr/bin/env bash
# Starts a private single-node SLURM cluster (munged, slurmctld, slurmd) whose every file lies under DIR:
#   tests/slurm/start.sh DIR    then    export SLURM_CONF=DIR/slurm.conf    ...    tests/slurm/stop.sh DIR
# Nothing is written outside DIR: no /etc/slurm/slurm.conf (a leftover one, without a controller, slows every
# `snakemake` call by the SLURM plugin's 10 s `scontrol` timeout), its own munge key and socket, its own ports
# (SLURM_TEST_PORT and the next one, default 16817-16818). Needs root and tests/slurm/install.sh. Waits until the
# node is idle; on failure prints the daemons' logs, stops what it started and exits 1.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
dir="$(mkdir -p "$1" && cd "$1" && pwd)"
port="${SLURM_TEST_PORT:-16817}"
host="$(hostname -s)"
here="$(cd "$(dirname "$0")" && pwd)"
[ "$(id -u)" = 0 ] || { echo "cannot start SLURM: not root (the daemons run as root here)" >&2; exit 1; }
if [ -e "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    echo "a cluster is already running in $dir" >&2; exit 1
fi
mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
chmod 700 "$dir/munge"

fail() {
    echo "cannot start SLURM: $1" >&2
    for log in munged.log slurmctld.log slurmd.log; do
        [ -s "$dir/$log" ] && { echo "--- $log" >&2; tail -n 20 "$dir/$log" >&2; }
    done
    "$here/stop.sh" "$dir" --keep >&2 || true
    echo "cannot start SLURM: $1" >&2
    exit 1
}

[ -s "$dir/munge/munge.key" ] || mungekey --create --keyfile "$dir/munge/munge.key" >/dev/null
munged --force --key-file "$dir/munge/munge.key" --socket "$dir/munge/munge.socket" \
    --pid-file "$dir/munge/munged.pid" --log-file "$dir/munged.log" --seed-file "$dir/munge/munged.seed" \
    || fail "munged did not start"

# The node as slurmd sees it (CPUs, sockets, cores), its memory a little lower than the machine's.
read -r -a node <<<"$(slurmd -C | head -n 1)"
memory=0
for field in "${node[@]}"; do
    case "$field" in RealMemory=*) memory="${field#RealMemory=}" ;; esac
done
layout=("${node[@]:1}")
layout=("${layout[@]/RealMemory=*/}")
cat >"$dir/slurm.conf" <<CONF
# A one-node test cluster, written by tests/slurm/start.sh; removed by tests/slurm/stop.sh.
ClusterName=diffabm-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes: the SLURM plugin's squeue status check needs them.
MinJobAge=300
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 ${layout[*]} RealMemory=$((memory * 9 / 10)) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# `srun` for DIR/bin, first on the PATH of the jobs: snakemake-executor-plugin-slurm-jobstep (0.6) runs each job
# with `srun` after removing every SLURM_* variable from its environment, SLURM_CONF included, and srun without it
# looks for /etc/slurm/slurm.conf. This one puts SLURM_CONF back and runs the real srun.
mkdir -p "$dir/bin"
cat >"$dir/bin/srun" <<SRUN
#!/bin/sh
SLURM_CONF='$dir/slurm.conf' exec $(command -v srun) "\$@"
SRUN
chmod +x "$dir/bin/srun"
export SLURM_CONF="$dir/slurm.conf"
slurmctld || fail "slurmctld did not start"
slurmd || fail "slurmd did not start"

for _ in $(seq 60); do
    state="$(sinfo --noheader --nodes "$host" --format %t 2>/dev/null || true)"
    case "$state" in idle*) exit 0 ;; esac
    sleep 0.5
done
fail "node $host not idle after 30 s (sinfo: '${state:-no answer}')"
