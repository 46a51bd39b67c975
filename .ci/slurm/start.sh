#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for the tests (Debian's slurm-wlm + munge, as root):
# slurmctld + slurmd, proctrack/linuxproc, task/none, no cgroups, select/cons_tres on CPUs,
# one partition "debug" holding this node, a munge key generated here. Waits until `sinfo`
# shows the node idle. Its state lives in $SLURM_CI_DIR (default /tmp/libmtl_rgb_slurm);
# .ci/slurm/stop.sh stops it. Exit 0 = running; anything else = it could not start (message on stderr).
set -euo pipefail
DIR=${SLURM_CI_DIR:-/tmp/libmtl_rgb_slurm}
CPUS=${SLURM_CI_CPUS:-4}   # job slots; may exceed the real cores (config_overrides)
if [ "$(id -u)" != 0 ]; then echo "start.sh: needs root (munged and slurmd run as root here)" >&2; exit 2; fi
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "start.sh: $tool not found (apt-get install -y slurm-wlm munge)" >&2; exit 2; }
done
HOST=$(hostname -s)
mkdir -p "$DIR"/{state,spool,log} /etc/munge /var/log/munge /run/munge /etc/slurm
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  munged --force
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=libmtlrgbci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MpiDefault=none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=30
KillWait=5
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
"$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
slurmctld -i
slurmd
for _ in $(seq 60); do
  state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) echo "SLURM up: node $HOST $state, partition debug ($DIR)"; exit 0 ;;
    drain*|down*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
echo "start.sh: the node did not become idle (sinfo: ${state:-nothing}); see $DIR/log/" >&2
exit 1
