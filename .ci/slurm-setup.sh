#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests that submit jobs (tests/test_slurm.py,
# tests/experiments/test_experiment_slurm.py). Needs root (CI runs as root). Idempotent: when munged,
# slurmctld and slurmd already answer it only checks and returns (about a second).
#
#   apt-get install slurm-wlm munge          (once; skipped when sbatch is already installed)
#   /etc/munge/munge.key                     (munge:munge, 0400; made once)
#   munged                                   (as the munge user)
#   /etc/slurm/slurm.conf + cgroup.conf      (one node: this host, all its CPUs; no accounting)
#   slurmctld, then slurmd                   (one slurmd only: a second one on the same host makes
#                                             launches fail with "Job credential replayed")
#
# Without root or apt, or when the cluster does not come up, it says so and exits 0: the SLURM
# tests then skip, saying why (tests/slurm_cluster.py).
set -euo pipefail

log() { echo "slurm-setup: $*"; }

if [ "$(id -u)" != 0 ]; then
    log "not root: no cluster set up (the SLURM tests skip unless sbatch is already on PATH)"
    exit 0
fi

if ! command -v sbatch >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        log "no apt-get: cannot install slurm-wlm + munge; the SLURM tests will skip"
        exit 0
    fi
    log "installing slurm-wlm and munge"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }; then
        log "could not install slurm-wlm + munge; the SLURM tests will skip"
        exit 0
    fi
fi

up() { scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }
if pgrep -x munged >/dev/null && pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && up; then
    log "already running: $(sinfo -h -o '%N %c CPUs %T')"
    exit 0
fi

# munge: the key and the daemon
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

# slurm.conf: this host, its CPUs and memory as slurmd sees them
host=$(hostname -s)
hw=$(slurmd -C | head -n 1)   # NodeName=... CPUs=... RealMemory=...
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >/etc/slurm/slurm.conf <<EOF
# written by .ci/slurm-setup.sh: one node, no accounting storage
ClusterName=botnet
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=30
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
cat >/etc/slurm/cgroup.conf <<EOF
CgroupPlugin=cgroup/v1
EOF

pgrep -x slurmctld >/dev/null || slurmctld
for _ in $(seq 1 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 100); do
    if up; then
        log "running: $(sinfo -h -o '%N %c CPUs %T')"
        exit 0
    fi
    sleep 0.3
done
scontrol update nodename="$host" state=resume 2>/dev/null || true
sleep 1
up || { log "no node came up (see /var/log/slurm/); the SLURM tests will skip"; sinfo || true; exit 0; }
log "running: $(sinfo -h -o '%N %c CPUs %T')"
