#!/usr/bin/env bash
# A real multi-node Slurm cluster on one machine: each node is a network namespace (its own address, its
# own slurmd, its own UTS hostname), linked by veth pairs to a bridge that also carries slurmctld's address.
# Multi-node jobs (`sbatch --nodes=2 slurm/pretrain.sh`) then do what they do on a cluster: srun launches one
# task per node through each node's slurmd, and torchrun's rendezvous crosses the "hosts" over the bridge.
#
#   slurm/netns_cluster.sh up       (root) namespaces, bridge, config, munge, slurmctld + one slurmd per node
#   slurm/netns_cluster.sh down     cancel jobs, stop the daemons (by pid file), remove namespaces and bridge
#   slurm/netns_cluster.sh status
#   slurm/netns_cluster.sh env      the `export SLURM_CONF=...` line for clients
#
# Addresses are private and never leave the machine: the bridge has $SUBNET.254/24 (slurmctld), node i is
# $SUBNET.i in namespace hb-n<i>; no route, NAT or forwarding to anything else is set up. The cluster has its
# own ports (6917/6918) and directory, so it runs beside slurm/local_cluster.sh. Inside a job, processes
# live in their node's namespaces: network (eth0 only), hostname n<i>, and an /etc/hosts naming every node.
#
# Slurm needs nothing special for this: one slurm.conf with `%n` in the slurmd paths, and `slurmd -N <node>`
# inside each namespace. munged's socket is a file, so every namespace reaches the one munged.
set -euo pipefail

DIR=${HEARTBEIT_NETNS_DIR:-/tmp/heartbeit-slurm-netns}
CONF=$DIR/slurm.conf
NODES=${HEARTBEIT_NETNS_NODES:-2}
SUBNET=${HEARTBEIT_NETNS_SUBNET:-10.77.0}
BRIDGE=hbbr0
# CPUs per node; the nodes share this machine's cores. Not `nproc`: it obeys OMP_NUM_THREADS.
CPUS=${HEARTBEIT_NETNS_CPUS:-$(getconf _NPROCESSORS_ONLN)}
WAIT_S=${HEARTBEIT_SLURM_WAIT_S:-60}
export SLURM_CONF=$CONF

say() { echo "netns_cluster: $*" >&2; }
die() { say "$*"; exit 3; }   # 3 = cannot run here (tests skip on it)
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

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

nodes() { seq 1 "$NODES"; }

network_up() {
  command -v ip >/dev/null || die "iproute2 (ip) is not installed"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE (needs CAP_NET_ADMIN)"
    ip addr add "$SUBNET.254/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local i ns
  for i in $(nodes); do
    ns=hb-n$i
    if ! ip netns list | grep -qw "$ns"; then ip netns add "$ns" || die "cannot create network namespace $ns"; fi
    if ! ip link show "$ns-h" >/dev/null 2>&1; then
      ip link add "$ns-h" type veth peer name eth0 netns "$ns"
      ip link set "$ns-h" master "$BRIDGE"
      ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
    fi
    ip link set "$ns-h" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
}

network_down() {
  local i
  for i in $(nodes); do
    ip link del "hb-n$i-h" 2>/dev/null || true   # removes the namespace's end too
    ip netns del "hb-n$i" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

write_config() {
  local i tmp
  tmp=$(mktemp "$DIR/.slurm.conf.XXXXXX")
  {
    cat <<EOF
# Written by slurm/netns_cluster.sh: $NODES nodes in network namespaces on one machine.
ClusterName=heartbeit-netns
SlurmctldHost=$(hostname -s)($SUBNET.254)
SlurmctldPort=6917
SlurmdPort=6918
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
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
AuthInfo=cred_expire=10
EOF
    for i in $(nodes); do
      echo "NodeName=n$i NodeAddr=$SUBNET.$i NodeHostname=n$i CPUs=$CPUS RealMemory=2000 State=UNKNOWN"
    done
    echo "PartitionName=netns Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
  } >"$tmp"
  if [[ -f $CONF ]] && ! cmp -s "$tmp" "$CONF"; then stop_daemons; fi
  mv "$tmp" "$CONF"
  chmod 0644 "$CONF"
}

start_munge() {
  if pgrep -x munged >/dev/null; then return 0; fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /etc/munge
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
  say "started munged"
}

stop_daemons() {
  local i
  for i in $(nodes); do stop_pidfile "$DIR/run/slurmd-n$i.pid" "slurmd n$i"; done
  stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
}

wait_idle() {
  local states=""
  for _ in $(seq $((WAIT_S * 5))); do
    states=$(sinfo -h -N -o '%N=%T' 2>/dev/null | sort -u || true)
    if [[ -n $states ]] && ! grep -qvE '=(idle|mixed|allocated|completing)$' <<<"$states"; then
      say "nodes: $(echo $states)"; return 0
    fi
    sleep 0.2
  done
  die "nodes did not become idle within ${WAIT_S}s ($(echo $states)); see $DIR/log/"
}

up() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, bridge, SlurmUser=root)"
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    || die "Slurm/munge not installed: run slurm/local_cluster.sh up once (it installs them)"
  mkdir -p "$DIR"/{state,run,log} && for i in $(nodes); do mkdir -p "$DIR/spool/n$i"; done
  network_up
  write_config
  { cat /etc/hosts; echo; echo "# slurm/netns_cluster.sh nodes"
    for i in $(nodes); do echo "$SUBNET.$i n$i"; done; } >"$DIR/hosts.tmp" && mv "$DIR/hosts.tmp" "$DIR/hosts"
  start_munge
  if ! alive "$DIR/run/slurmctld.pid"; then slurmctld -i -f "$CONF"; say "started slurmctld on $SUBNET.254"; fi
  local i
  for i in $(nodes); do
    if ! alive "$DIR/run/slurmd-n$i.pid"; then
      # nsenter, not `ip netns exec`: the latter remounts /sys for the namespace, hiding /sys/fs/cgroup,
      # without which slurmd 22.05 refuses to start. Its own UTS and mount namespaces too: the node's
      # processes see hostname n<i>, and an /etc/hosts (bind-mounted, private to the node) in which every
      # node name resolves, as on a real cluster (torch's rendezvous and gloo look the hostname up).
      nsenter --net="/run/netns/hb-n$i" unshare --uts --mount --propagation private \
        sh -c "mount --bind '$DIR/hosts' /etc/hosts && hostname n$i && exec slurmd -f '$CONF' -N n$i" \
        || die "slurmd n$i did not start; see $DIR/log/slurmd-n$i.log"
      say "started slurmd n$i on $SUBNET.$i"
    fi
  done
  wait_idle
  echo "export SLURM_CONF=$CONF"
}

down() {
  if alive "$DIR/run/slurmctld.pid"; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel --quiet 2>/dev/null || true
    for _ in $(seq 50); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  stop_daemons
  stop_pidfile "$DIR/run/munged.pid" munged
  network_down
}

status() {
  local rc=0 i
  if alive "$DIR/run/slurmctld.pid"; then echo "slurmctld: running (pid $(cat "$DIR/run/slurmctld.pid"))"
  else echo "slurmctld: stopped"; rc=1; fi
  for i in $(nodes); do
    if alive "$DIR/run/slurmd-n$i.pid"; then echo "slurmd n$i: running (pid $(cat "$DIR/run/slurmd-n$i.pid"))"
    else echo "slurmd n$i: stopped"; rc=1; fi
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
