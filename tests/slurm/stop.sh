#!/usr/bin/env bash
# Stops the cluster that tests/slurm/start.sh started in DIR: cancels its jobs, kills slurmd, slurmctld and munged
# by their pid files (no process is looked up by name), waits until they have exited, then removes DIR with its
# slurm.conf (--keep: leaves DIR, for start.sh's failure path). Idempotent; exit 1 if a daemon would not stop.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
dir="$1"
[ -d "$dir" ] || exit 0
if [ -f "$dir/slurm.conf" ] && [ -e "$dir/slurmctld.pid" ]; then
    SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --full "$(SLURM_CONF="$dir/slurm.conf" timeout 10 squeue \
        --noheader --format %i 2>/dev/null | tr '\n' ' ')" >/dev/null 2>&1 || true
fi
status=0
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
        kill -0 "$pid" 2>/dev/null && { echo "could not stop process $pid ($pidfile)" >&2; status=1; }
    fi
    rm -f "$pidfile"
done
[ "${2:-}" = --keep ] || [ "$status" != 0 ] || rm -rf "$dir"
exit "$status"
