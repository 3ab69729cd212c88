#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests and demos: Debian's slurmctld + slurmd +
# munge, no systemd, no cgroups, no accounting database.
#
#   slurm/local_cluster.sh up       install missing packages (root, apt), write the config, start the
#                                   daemons, wait until the node is idle. Safe to repeat.
#   slurm/local_cluster.sh down     cancel every job, stop the daemons this script started (by pid file)
#   slurm/local_cluster.sh status   daemons, node and queue
#   slurm/local_cluster.sh env      print the `export SLURM_CONF=...` line for other shells
#
# Everything lives under $HEARTBEIT_SLURM_DIR (default /tmp/heartbeit-slurm): slurm.conf, state, spool,
# logs and pid files. Clients find the cluster through SLURM_CONF; when /etc/slurm/slurm.conf does not
# exist, `up` also links it there so plain `sbatch` works, and `down` removes that link again.
#
# What does not work on such a cluster (and need not): `sacct` (no accounting storage; use
# `scontrol show job`) and `srun --mpi=pmi2`. `srun --mpi=pmix` works once libpmix-dev is installed.
#
# The node declares $HEARTBEIT_SLURM_GPUS (default 2) GPUs as a GRES (`GresTypes=gpu`, `Gres=gpu:N` on the
# node line) with no real device: `--gpus-per-node` requests are scheduled, counted and exported
# (SLURM_GPUS_ON_NODE) exactly as on a GPU cluster, so GPU-shaped jobs are testable here. Slurm 22.05's
# gres/gpu plugin reports 0 GPUs for a record without `File=` (the node goes INVALID: "count reported lower
# than configured"), so gres.conf names empty placeholder files $HEARTBEIT_SLURM_DIR/dev/gpu0..N-1 that
# nothing opens (TaskPlugin=task/none binds no devices).
set -euo pipefail

DIR=${HEARTBEIT_SLURM_DIR:-/tmp/heartbeit-slurm}
CONF=$DIR/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge libpmix-dev)
WAIT_S=${HEARTBEIT_SLURM_WAIT_S:-60}
GPUS=${HEARTBEIT_SLURM_GPUS:-2}
export SLURM_CONF=$CONF

say() { echo "local_cluster: $*" >&2; }
die() { say "$*"; exit 3; }   # 3 = cannot run here (tests skip on it)

alive() {  # alive PIDFILE: the process named in the pid file is running
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME: TERM, wait up to 10 s, then KILL
  local pidfile=$1 name=$2 pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then say "$name ($pid) ignored TERM; killing"; kill -KILL "$pid" || true; fi
  rm -f "$pidfile"
  say "stopped $name ($pid)"
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  dpkg -s libpmix-dev >/dev/null 2>&1 || missing+=(libpmix-dev)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]} and not root: cannot install (needs: ${PACKAGES[*]})"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get on this machine"
  say "installing ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$DIR/apt.log" 2>&1 \
    || die "apt-get install ${missing[*]} failed (see $DIR/apt.log)"
}

write_config() {
  local host node mem tmp
  host=$(hostname -s)
  # The node line is what slurmd itself detects, with RealMemory at ~95% so slurmd never drains the node
  # for having "less memory than configured".
  node=$(slurmd -C | head -n1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$node")
  tmp=$(mktemp "$DIR/.slurm.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Written by slurm/local_cluster.sh: a one-node cluster for HeartBEiT Bench tests and demos.
ClusterName=heartbeit
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
MinJobAge=600
GresTypes=gpu
# A requeued job waits cred_expire seconds before it may start again (default 120); locally 10 is plenty.
AuthInfo=cred_expire=10
$node Gres=gpu:$GPUS NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # the GPUs' GRES, read by slurmd beside slurm.conf (placeholder files: see the header); changing it needs
  # fresh daemons like the main config
  mkdir -p "$DIR/dev"
  for ((i = 0; i < GPUS; i++)); do : >"$DIR/dev/gpu$i"; done
  printf 'NodeName=%s Name=gpu File=%s/dev/gpu[0-%s]\n' "$host" "$DIR" "$((GPUS - 1))" >"$tmp.gres"
  if [[ -f $CONF ]] && cmp -s "$tmp" "$CONF" && cmp -s "$tmp.gres" "$DIR/gres.conf"; then
    rm -f "$tmp" "$tmp.gres"
  else
    mv "$tmp.gres" "$DIR/gres.conf"
    chmod 0644 "$DIR/gres.conf"
    # A changed config (new script version, other hostname) needs fresh daemons.
    if [[ -f $CONF ]]; then stop_pidfile "$DIR/run/slurmd.pid" slurmd; stop_pidfile "$DIR/run/slurmctld.pid" slurmctld; fi
    mv "$tmp" "$CONF"
  fi
  chmod 0644 "$CONF"
}

start_munge() {
  if pgrep -x munged >/dev/null; then return 0; fi   # a site or earlier munged serves us as well
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /etc/munge
  if [[ ! -s /etc/munge/munge.key ]]; then mungekey --create --keyfile /etc/munge/munge.key; fi
  chown munge:munge /etc/munge/munge.key
  chmod 0600 /etc/munge/munge.key
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$DIR/run/munged.pid"   # ours to stop on `down`
  say "started munged"
}

wait_idle() {
  local state=""
  for _ in $(seq $((WAIT_S * 5))); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
    case $state in
      idle|mixed|allocated|completing) say "node is $state"; return 0 ;;
      down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "node did not become idle within ${WAIT_S}s (state: ${state:-unknown}); see $DIR/log/"
}

up() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (SlurmUser=root; daemons bind privileged ports)"
  mkdir -p "$DIR"/{state,spool,run,log}
  install_packages
  write_config
  start_munge
  if ! alive "$DIR/run/slurmctld.pid"; then slurmctld -i -f "$CONF"; say "started slurmctld"; fi
  if ! alive "$DIR/run/slurmd.pid"; then slurmd -f "$CONF"; say "started slurmd"; fi
  if [[ ! -e /etc/slurm/slurm.conf ]]; then
    mkdir -p /etc/slurm && ln -s "$CONF" /etc/slurm/slurm.conf
  fi
  wait_idle
  echo "export SLURM_CONF=$CONF"
}

down() {
  if alive "$DIR/run/slurmctld.pid"; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel --quiet 2>/dev/null || true
    for _ in $(seq 50); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  stop_pidfile "$DIR/run/slurmd.pid" slurmd
  stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
  stop_pidfile "$DIR/run/munged.pid" munged
  if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$CONF" ]]; then
    rm -f /etc/slurm/slurm.conf
  fi
}

status() {
  local name rc=0
  for name in munged slurmctld slurmd; do
    if alive "$DIR/run/$name.pid"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
    elif [[ $name == munged ]] && pgrep -x munged >/dev/null; then echo "munged: running (not started here)"
    else echo "$name: stopped"; rc=1; fi
  done
  if [[ $rc -eq 0 ]]; then sinfo -N -l; squeue; fi
  return $rc
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
