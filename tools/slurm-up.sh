#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine, bound to the loopback address, for the executor tests
# (tests/test_slurm.py). Needs root and Debian's slurm-wlm and munge (installed here when missing). Idempotent:
# a cluster already answering is left alone. No test traffic leaves the machine: slurmctld and slurmd listen on
# 127.0.0.1 only, and the node's address is 127.0.0.1.
#
# Usage: bash tools/slurm-up.sh        (then: sinfo; the partition is "debug")
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up: a cluster is already up: $(sinfo -h -o '%P %D %T %C' | head -1)"
    exit 0
fi

node=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
state=/var/lib/tinymnist-slurm
mkdir -p "$state/ctld" "$state/d" /var/log/slurm /run/munge /etc/slurm
chown -R munge:munge /run/munge 2>/dev/null || true

# munge: one key for this machine (Debian's package makes one; make it if it is missing).
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged --force
fi

# The node's name must resolve to the loopback address that every daemon is bound to.
grep -qE "^127\.0\.0\.1[[:space:]].*\b$node\b" /etc/hosts || echo "127.0.0.1 $node" >> /etc/hosts

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=tinymnist
SlurmctldHost=$node(127.0.0.1)
SlurmctldParameters=enable_configless
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in a container: track processes by their parent, bind no cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Jobs share the node by CPU, so an array of one-CPU jobs runs one job per core.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# scancel sends SIGTERM, then SIGKILL after KillWait seconds: time for a run to write its checkpoint.
KillWait=30
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MaxArraySize=10001
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "slurm-up: cluster up: $(sinfo -h -o 'partition %P, %D node, state %T, CPUs %C (A/I/O/T)' | head -1)"
        exit 0
    fi
    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm-up: the cluster did not come up in 60 s; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
