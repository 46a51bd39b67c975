#!/usr/bin/env bash
# Stops the cluster of .ci/slurm/start.sh (its jobs, slurmd, slurmctld; munged is left running).
DIR=${SLURM_CI_DIR:-/tmp/libmtl_rgb_slurm}
scancel --user=root >/dev/null 2>&1 || true
for daemon in slurmd slurmctld; do
  pidfile="$DIR/$daemon.pid"
  if [ -s "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$pidfile"
  fi
done
