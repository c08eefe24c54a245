#!/usr/bin/env bash
# A real one-node Slurm cluster on loopback, for trying `funnel sweep FILE
# --emit slurm` locally and for the integration test (tests/slurm.rs).
#
#   scripts/slurm-local.sh install    Debian packages slurm-wlm and munge when absent
#                                     (exit 3 when they cannot be installed)
#   scripts/slurm-local.sh up DIR     munged, slurmctld and slurmd with every key, socket,
#                                     config, state, pid and log file under DIR; waits
#                                     until the node is idle, then prints (stdout) the
#                                     line to use it:  export SLURM_CONF=DIR/slurm.conf
#   scripts/slurm-local.sh down DIR   cancels its jobs and stops the daemons started from DIR
#
# Needs root (slurmd starts jobs as their user). `up` and `down` write only
# under DIR: nothing in /etc, /run or /var (the packages' own paths are only
# read: binaries and plugins).
set -euo pipefail

readonly NODE=localhost
# funnel's array job asks for 2 CPUs and 8G per task (src/sweep/slurm.rs):
# the node is declared with at least that, whatever the machine has.
readonly MIN_CPUS=2 MIN_MEMORY_MB=8192

say() { echo "slurm-local: $*" >&2; }
die() {
    say "$*"
    exit 1
}

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

have_slurm() {
    local c
    for c in munged slurmctld slurmd sinfo squeue sbatch scancel; do
        command -v "$c" >/dev/null 2>&1 || return 1
    done
}

cmd_install() {
    if have_slurm; then
        say "slurm and munge are installed ($(slurmctld -V 2>/dev/null || echo slurmctld))"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "cannot install Slurm: needs root and apt-get (Debian packages slurm-wlm and munge)"
        exit 3
    fi
    say "installing slurm-wlm and munge (apt-get)"
    if ! (export DEBIAN_FRONTEND=noninteractive
        timeout 900 apt-get update -qq &&
            timeout 900 apt-get install -y -qq slurm-wlm munge) >&2; then
        say "cannot install Slurm: apt-get install slurm-wlm munge failed (see above)"
        exit 3
    fi
    have_slurm || {
        say "cannot install Slurm: the packages installed but munged/slurmctld/slurmd/sinfo are not on PATH"
        exit 3
    }
}

# A TCP port nobody listens on, from the high range.
free_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if command -v ss >/dev/null 2>&1; then
            [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return 0; }
        elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

# The pid in FILE when that process runs.
live_pid() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

print_logs() {
    local dir=$1 f
    for f in "$dir"/log/*.log "$dir"/munge/munged.log; do
        [[ -f $f ]] || continue
        echo "----- $f (last 60 lines)" >&2
        tail -n 60 "$f" >&2
    done
}

write_conf() {
    local dir=$1 cpus memory ctld_port slurmd_port node_conf
    node_conf=$(slurmd -C 2>/dev/null | head -n 1) || true
    cpus=$(sed -n 's/.*\bCPUs=\([0-9]\+\).*/\1/p' <<<"$node_conf")
    memory=$(sed -n 's/.*\bRealMemory=\([0-9]\+\).*/\1/p' <<<"$node_conf")
    [[ -n $cpus ]] || cpus=$(nproc)
    [[ -n $memory ]] || memory=$(($(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024))
    ((cpus >= MIN_CPUS)) || cpus=$MIN_CPUS
    ((memory >= MIN_MEMORY_MB)) || memory=$MIN_MEMORY_MB
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh up: one node on loopback, all state under
# $dir.
ClusterName=funnel-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups and no systemd in a container: plain process tracking, no task
# binding, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The node is declared as below even where the machine has fewer CPUs or
# less memory than funnel's array job asks for.
SlurmdParameters=config_overrides
# Traffic stays on 127.0.0.1, but the daemons listen on every interface
# (Slurm's default; munge with the key under $dir authenticates every
# message): CommunicationParameters=NoInAddrAny would bind to what the host
# name resolves to, which need not be loopback in a container.
ReturnToService=2
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# Shows the logs, stops what started, fails.
fail_up() {
    print_logs "$1"
    cmd_down "$1" || true
    die "$2"
}

# Waits (10 s at most) for daemon $2 to write its pid file $3, so that
# `down` finds it.
started() {
    local i
    for i in $(seq 1 100); do
        live_pid "$3" >/dev/null && return 0
        sleep 0.1
    done
    fail_up "$1" "$2 wrote no pid file $3 within 10 s"
}

cmd_up() {
    local dir=$1 d state since
    [[ $(id -u) -eq 0 ]] || die "up needs root: slurmd starts each job as its user"
    have_slurm || { say "Slurm is not installed: run $0 install"; exit 3; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    [[ $dir != *[[:space:]]* ]] || die "$dir: slurm.conf cannot hold paths with spaces"
    for d in slurmd slurmctld; do
        if live_pid "$dir/run/$d.pid" >/dev/null; then
            die "$d from $dir runs already ($0 down $dir first)"
        fi
    done
    mkdir -p "$dir"/{munge,state,spool,log,run}
    # munged wants the socket's folder searchable by all (clients run as
    # any user) and writable by no one else; the key readable only by root.
    chmod 0711 "$dir/munge"
    if [[ ! -s $dir/munge/munge.key ]]; then
        (umask 077 && head -c 1024 /dev/urandom >"$dir/munge/munge.key")
    fi
    chmod 0400 "$dir/munge/munge.key"
    write_conf "$dir"
    export SLURM_CONF=$dir/slurm.conf

    if ! live_pid "$dir/munge/munged.pid" >/dev/null; then
        munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
            --seed-file="$dir/munge/munged.seed" || fail_up "$dir" "munged did not start"
        started "$dir" munged "$dir/munge/munged.pid"
    fi
    # Daemonised; each writes its pid file. -N: this machine is the node
    # named localhost whatever its host name.
    slurmctld -f "$SLURM_CONF" || fail_up "$dir" "slurmctld did not start"
    started "$dir" slurmctld "$dir/run/slurmctld.pid"
    slurmd -f "$SLURM_CONF" -N "$NODE" || fail_up "$dir" "slurmd did not start"
    started "$dir" slurmd "$dir/run/slurmd.pid"

    since=$SECONDS
    state=
    while ((SECONDS - since < 60)); do
        state=$(timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null || true)
        case $state in
            idle*) break ;;
        esac
        sleep 1
    done
    if [[ $state != idle* ]]; then
        timeout 10 sinfo -N -l -R >&2 2>&1 || true
        fail_up "$dir" "the node did not become idle within 60 s (state: ${state:-no answer})"
    fi
    say "one-node cluster up: partition debug, node $NODE ($(grep -o 'CPUs=[0-9]* RealMemory=[0-9]*' "$SLURM_CONF")); stop: $0 down $dir"
    echo "export SLURM_CONF=$SLURM_CONF"
}

# Sends TERM to the process in pid file $2 (named $1), KILL after 15 s.
stop_pid_file() {
    local name=$1 file=$2 pid i
    pid=$(live_pid "$file") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    say "$name ($pid) ignored TERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

# A process and its descendants, deepest first.
tree() {
    local c kids
    if command -v ps >/dev/null 2>&1; then
        kids=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
    else
        kids=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
    fi
    for c in $kids; do tree "$c"; done
    echo "$1"
}

# Job steps of this cluster still running: slurmstepd processes whose
# environment (inherited from the slurmd started by `up`) names its slurm.conf.
leftover_steps() {
    local conf=$1 p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == slurmstepd ]] || continue
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$conf" && echo "$p"
    done
    return 0
}

cmd_down() {
    local dir=$1 conf i
    local -a ids pids
    [[ -d $dir ]] || { say "no $dir: nothing to stop"; return 0; }
    dir=$(cd "$dir" && pwd -P)
    conf=$dir/slurm.conf
    if [[ -f $conf ]] && live_pid "$dir/run/slurmctld.pid" >/dev/null; then
        export SLURM_CONF=$conf
        for i in $(seq 1 30); do
            mapfile -t ids < <(timeout 10 squeue -h -o '%F' 2>/dev/null | sort -u)
            ((${#ids[@]} > 0)) || break
            ((i > 1)) || say "cancelling jobs: ${ids[*]}"
            timeout 10 scancel --full --quiet "${ids[@]}" >/dev/null 2>&1 || true
            sleep 1
        done
    fi
    stop_pid_file slurmd "$dir/run/slurmd.pid"
    stop_pid_file slurmctld "$dir/run/slurmctld.pid"
    # Job steps a failed cancel left behind (slurmctld was not answering),
    # with every process they started.
    for i in $(leftover_steps "$conf"); do
        mapfile -t pids < <(tree "$i")
        say "killing job step $i and its processes: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    done
    stop_pid_file munged "$dir/munge/munged.pid"
    say "stopped the cluster in $dir"
}

case ${1:-} in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    up) [[ $# -eq 2 ]] || usage; cmd_up "$2" ;;
    down) [[ $# -eq 2 ]] || usage; cmd_down "$2" ;;
    *) usage ;;
esac
