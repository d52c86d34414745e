#!/usr/bin/env bash
# Installs a single-node SLURM (Debian's slurm-wlm: slurmctld, slurmd, the client commands) and munge, for
# tests/test_slurm.py. Idempotent: does nothing when slurmctld, slurmd, sbatch and munged are already installed.
# Fails (exit 1, the reason on the last line of stderr) without root, apt-get or the package mirror.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
have() { command -v "$1" >/dev/null 2>&1; }
if have slurmctld && have slurmd && have sbatch && have squeue && have sinfo && have munged; then
    exit 0
fi
fail() { echo "$1" >&2; exit 1; }
have apt-get || fail "cannot install SLURM: no apt-get (not a Debian-like system)"
[ "$(id -u)" = 0 ] || fail "cannot install SLURM: not root (apt-get needs root; install slurm-wlm and munge by hand)"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing or stale; a mirror that cannot be reached fails here or at the install below.
if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || fail "cannot install SLURM: apt-get update failed (no network to the package mirror?)"
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
        || fail "cannot install SLURM: apt-get install slurm-wlm munge failed"
fi
have slurmctld && have slurmd && have sbatch && have munged || fail "cannot install SLURM: slurm-wlm installed no slurmctld/slurmd/sbatch"
