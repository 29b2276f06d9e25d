#!/usr/bin/env bash
# A private three-node RabbitMQ 3.10 cluster on this machine, for failover tests: nodes
# op-cluster-{1,2,3}@localhost with AMQP on 127.0.0.1:5681-5683, clustered, each with its own
# data, logs, pid file, config and an empty plugin list, sharing one Erlang cookie in a private
# HOME. It is independent of the shared broker (rabbit@localhost on 127.0.0.1:5672): it never
# reads that node's configuration or cookie, never addresses it, and never restarts epmd, which
# it shares (node names are registered machine-wide, which is why they are fixed and prefixed).
#
#   rabbitmq-cluster.sh [--base DIR] start      start what is not running, join, print the URLs
#   rabbitmq-cluster.sh [--base DIR] stop       stop all three nodes (keeps their data)
#   rabbitmq-cluster.sh [--base DIR] clean      stop, then delete the base dir
#   rabbitmq-cluster.sh [--base DIR] kill N     SIGKILL node N (1-3), nothing else
#   rabbitmq-cluster.sh [--base DIR] restart N  start node N again, wait until it rejoined
#   rabbitmq-cluster.sh [--base DIR] leader Q [--vhost V]  number of the node leading quorum queue Q
#   rabbitmq-cluster.sh [--base DIR] status     one line per node: up or down
#   rabbitmq-cluster.sh urls                    the AMQP URLs, comma-separated
#   rabbitmq-cluster.sh [--base DIR] ctl N TOOL ARGS...  e.g. ctl 2 rabbitmqctl list_queues
#
# Quiet on success except for what a command is asked to print (stdout); errors on stderr, exit 1.
# The base dir defaults to $RABBITMQ_CLUSTER_BASE, else ${TMPDIR:-/tmp}/op-rabbitmq-cluster.
# Commands that change state take one machine-wide lock (ports and node names are machine-wide),
# so concurrent `start`s do not race: one starts the cluster, the others wait and print the URLs.
set -euo pipefail

readonly NODES=(1 2 3)
readonly NAME_PREFIX=op-cluster-
readonly AMQP_PORT_BASE=5680  # node N listens on 5680+N
readonly DIST_PORT_BASE=25680 # node N's Erlang distribution port is 25680+N
# rabbitmqctl's own distribution ports; the shared node's CLI uses the default 35672-35682.
readonly CTL_DIST_PORT_MIN=35691 CTL_DIST_PORT_MAX=35710
readonly LOCK_FILE=/tmp/op-rabbitmq-cluster.lock
readonly MARKER=.op-rabbitmq-cluster
TIMEOUT=${RABBITMQ_CLUSTER_TIMEOUT:-120} # seconds a node may take to boot or rejoin

die() { printf 'rabbitmq-cluster: %s\n' "$*" >&2; exit 1; }

sbin_dir() {
  local dirs=(/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.*/sbin)
  [[ -x ${dirs[-1]}/rabbitmq-server ]] || die "RabbitMQ 3.10 not found (/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.*/sbin); install the Debian package rabbitmq-server"
  # The highest patch release if several are installed (the glob sorts 3.10.10 before 3.10.8).
  printf '%s\n' "${dirs[@]}" | sort -V | tail -n1
}

check_node_number() {
  [[ ${1:-} =~ ^[1-3]$ ]] || die "node number must be 1, 2 or 3, got '${1:-}'"
}

node_name() { printf '%s%s@localhost' "$NAME_PREFIX" "$1"; }
amqp_port() { printf '%s' $((AMQP_PORT_BASE + $1)); }
dist_port() { printf '%s' $((DIST_PORT_BASE + $1)); }
node_dir() { printf '%s/node%s' "$BASE" "$1"; }
url() { printf 'amqp://guest:guest@127.0.0.1:%s/%%2f' "$(amqp_port "$1")"; }

urls() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("$(url "$n")"); done
  (IFS=,; printf '%s\n' "${out[*]}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when the port speaks AMQP 0-9-1: after the protocol header the broker's first frame is a
# method frame (type 1, connection.start). An open port alone is not enough: the listener of a
# node that is joining or booting may accept and close.
amqp_answers() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'AMQP\x00\x00\x09\x01' >&3
    IFS= read -r -t 3 -N 1 -u 3 frame_type || exit 1
    [[ $frame_type == $'\x01' ]]
  ) 2>/dev/null
}

environ_has() { # pid, VAR=value (the file's entries end in NUL: grep -z)
  grep -qzxF -- "$2" "/proc/$1/environ" 2>/dev/null
}

alive() { # pid: running (a zombie is dead)
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

is_node_process() { # pid, node number: the node's Erlang VM, not its wrapper or a CLI
  alive "$1" && [[ $(cat "/proc/$1/comm" 2>/dev/null) == beam.smp ]] &&
    environ_has "$1" "RABBITMQ_NODENAME=$(node_name "$2")"
}

# The pid of node N's Erlang VM, empty if it is not running. The pid file is checked against
# the process (a stale file may name a reused pid); without it, the process is found by the
# RABBITMQ_NODENAME in its environment (in 3.10 the name is not on beam.smp's command line).
# A node of that name running from another base dir is an error: the ports are taken.
node_pid() {
  local n=$1 pid comm_file
  pid=$(cat "$(node_dir "$n")/pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && is_node_process "$pid" "$n"; then
    environ_has "$pid" "RABBITMQ_MNESIA_BASE=$(node_dir "$n")/mnesia" && { echo "$pid"; return; }
  fi
  # One grep over every process's name, then the environment of the few Erlang VMs only.
  while IFS= read -r comm_file; do
    pid=${comm_file#/proc/}; pid=${pid%/comm}
    is_node_process "$pid" "$n" || continue
    if environ_has "$pid" "RABBITMQ_MNESIA_BASE=$(node_dir "$n")/mnesia"; then
      echo "$pid"; return
    fi
    local other
    other=$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's|^RABBITMQ_MNESIA_BASE=\(.*\)/node[0-9]*/mnesia$|\1|p')
    die "$(node_name "$n") (pid $pid) runs from another base dir (${other:-unknown}); pass --base ${other:-DIR}"
  done < <(grep -lxF beam.smp /proc/[0-9]*/comm 2>/dev/null)
}

# True when node N runs (from this base dir; from another one is an error, see node_pid).
running() {
  local pid
  pid=$(node_pid "$1") || exit 1
  [[ -n $pid ]]
}

# Environment shared by the nodes and the CLI. `env -i` drops the caller's RABBITMQ_*/ERL_*
# variables; RABBITMQ_CONF_ENV_FILE points away from /etc/rabbitmq/rabbitmq-env.conf, which
# names the shared node; HOME holds this cluster's cookie.
common_env() {
  printf '%s\n' \
    "PATH=$PATH" "HOME=$BASE/home" "LANG=C.UTF-8" "LC_ALL=C.UTF-8" \
    "RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf" \
    "RABBITMQ_CTL_DIST_PORT_MIN=$CTL_DIST_PORT_MIN" "RABBITMQ_CTL_DIST_PORT_MAX=$CTL_DIST_PORT_MAX" \
    "ERL_EPMD_ADDRESS=127.0.0.1"
}

# A CLI tool (rabbitmqctl, rabbitmq-queues, ...) against node N; never against any other node.
ctl() {
  local n=$1 tool=$2 env_vars
  shift 2
  mapfile -t env_vars < <(common_env)
  timeout 90 env -i "${env_vars[@]}" "$SBIN/$tool" -n "$(node_name "$n")" "$@" </dev/null
}

prepare_base() {
  mkdir -p "$BASE"
  [[ -f $BASE/$MARKER || -z $(ls -A "$BASE") ]] ||
    die "$BASE exists and is not a rabbitmq-cluster.sh base dir; choose another --base"
  touch "$BASE/$MARKER"
  chmod 700 "$BASE"
  mkdir -p "$BASE/home"
  if [[ ! -s $BASE/home/.erlang.cookie ]]; then
    (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$BASE/home/.erlang.cookie")
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
  : >"$BASE/rabbitmq-env.conf"
  printf '[].\n' >"$BASE/enabled_plugins"
  local n dir
  for n in "${NODES[@]}"; do
    dir=$(node_dir "$n")
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<EOF
# Written by scripts/rabbitmq-cluster.sh: node $(node_name "$n") of the private test cluster.
cluster_name = op-cluster
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
log.console = false
log.file.level = info
EOF
    # Nodes 2 and 3 join node 1 on their first boot, booting in parallel with it: they retry
    # until its database is up. A node that already has data ignores this and rejoins the
    # cluster it knows.
    ((n == 1)) || cat >>"$dir/rabbitmq.conf" <<EOF
cluster_formation.peer_discovery_backend = classic_config
cluster_formation.classic_config.nodes.1 = $(node_name 1)
cluster_formation.discovery_retry_limit = $((TIMEOUT * 2))
cluster_formation.discovery_retry_interval = 500
EOF
  done
}

# Starts node N's VM in its own session (so a test's Ctrl-C or process-group kill does not take
# it down) with every descriptor above stderr closed: the node must not hold the lock while it
# lives, nor keep a caller's pipe open (a `urls=$(... start)` would never see end of file).
launch() {
  local n=$1 dir env_vars port
  dir=$(node_dir "$n")
  for port in "$(amqp_port "$n")" "$(dist_port "$n")"; do
    port_open "$port" && die "port $port (for $(node_name "$n")) is taken by another process: $(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' || echo unknown)"
  done
  mapfile -t env_vars < <(common_env)
  env_vars+=(
    "RABBITMQ_NODENAME=$(node_name "$n")"
    "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" "RABBITMQ_NODE_PORT=$(amqp_port "$n")"
    "RABBITMQ_DIST_PORT=$(dist_port "$n")"
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
    "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf"
    "RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config"
    "RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins"
    "RABBITMQ_MNESIA_BASE=$dir/mnesia" "RABBITMQ_LOG_BASE=$dir/log"
    "RABBITMQ_PID_FILE=$dir/pid" "ERL_CRASH_DUMP=$dir/erl_crash.dump"
  )
  rm -f "$dir/pid"
  (
    cd "$dir"
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec </dev/null >>"$dir/log/console.log" 2>&1
    exec env -i "${env_vars[@]}" setsid "$SBIN/rabbitmq-server"
  ) &
  LAUNCHED[$n]=$!
}

log_tail() { # node number
  local dir
  dir=$(node_dir "$1")
  tail -n 15 "$dir/log/console.log" "$dir/log/$(node_name "$1").log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# Waits until node N answers AMQP; fails early if the process it was launched as has exited.
wait_amqp() {
  local n=$1 deadline=$((SECONDS + TIMEOUT))
  until amqp_answers "$(amqp_port "$n")"; do
    if [[ -n ${LAUNCHED[$n]:-} ]] && ! alive "${LAUNCHED[$n]}" && ! running "$n"; then
      echo "rabbitmq-cluster: $(node_name "$n") exited while starting; its logs ($(node_dir "$n")/log):" >&2
      log_tail "$n"; exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "rabbitmq-cluster: $(node_name "$n") did not answer AMQP on port $(amqp_port "$n") within ${TIMEOUT}s; its logs:" >&2
      log_tail "$n"; exit 1
    fi
    sleep 0.2
  done
}

# "true" when node N's cluster contains node 1 (node 1 itself always does).
in_cluster() {
  [[ $(ctl "$1" rabbitmqctl -q eval "lists:member('$(node_name 1)', rabbit_nodes:all())." 2>/dev/null) == true ]]
}

running_count() { # as seen by node N
  ctl "$1" rabbitmqctl -q eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || true
}

join() {
  local n=$1 out
  out=$({ ctl "$n" rabbitmqctl -q stop_app && ctl "$n" rabbitmqctl -q join_cluster "$(node_name 1)" &&
    ctl "$n" rabbitmqctl -q start_app; } 2>&1) || die "$(node_name "$n") could not join $(node_name 1): $out"
}

# Waits until node N sees `want` running cluster members.
wait_running() {
  local n=$1 want=$2 deadline=$((SECONDS + TIMEOUT)) seen
  while :; do
    seen=$(running_count "$n")
    [[ $seen == "$want" ]] && return
    ((SECONDS < deadline)) || die "$(node_name "$n") sees ${seen:-no} running cluster members, expected $want, after ${TIMEOUT}s"
    sleep 0.5
  done
}

cmd_start() {
  local n stopped=()
  # Nodes of this name running from another base dir stop us before anything is written.
  for n in "${NODES[@]}"; do running "$n" || stopped+=("$n"); done
  prepare_base
  for n in "${stopped[@]}"; do launch "$n"; done
  for n in "${NODES[@]}"; do wait_amqp "$n"; done
  if [[ ! -f $BASE/clustered ]]; then
    for n in 2 3; do in_cluster "$n" || join "$n"; done
    for n in 2 3; do wait_amqp "$n"; done
    touch "$BASE/clustered"
  fi
  wait_running 1 "${#NODES[@]}"
  urls
}

# Stops node N gracefully; a node that does not stop within the timeout is killed.
stop_node() {
  local n=$1 pid deadline
  pid=$(node_pid "$n")
  [[ -n $pid ]] || return 0
  ctl "$n" rabbitmqctl -q shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + TIMEOUT))
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      echo "rabbitmq-cluster: $(node_name "$n") did not stop within ${TIMEOUT}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
}

cmd_stop() {
  [[ -d $BASE ]] || return 0
  # Followers first, node 1 last: it is the one to boot first if the nodes are started one by one.
  local n
  for n in 3 2 1; do stop_node "$n"; done
}

cmd_clean() {
  [[ -d $BASE ]] || return 0
  [[ -f $BASE/$MARKER ]] || die "$BASE is not a rabbitmq-cluster.sh base dir; not deleting it"
  cmd_stop
  rm -rf -- "$BASE"
}

cmd_kill() {
  local n=$1 pid deadline
  check_node_number "$n"
  pid=$(node_pid "$n")
  [[ -n $pid ]] || die "$(node_name "$n") is not running; nothing killed"
  kill -KILL "$pid"
  deadline=$((SECONDS + 10))
  while alive "$pid"; do
    ((SECONDS < deadline)) || die "$(node_name "$n") (pid $pid) still alive 10s after SIGKILL"
    sleep 0.05
  done
}

cmd_restart() {
  local n=$1 m up=0
  check_node_number "$n"
  [[ -f $BASE/clustered ]] || die "the cluster in $BASE was never started; run start first"
  running "$n" || launch "$n"
  wait_amqp "$n"
  for m in "${NODES[@]}"; do if running "$m"; then up=$((up + 1)); fi; done
  wait_running "$n" "$up"
}

# The quorum queue's leader as its members report it (rabbitmq-queues quorum_status asks each
# member's Raft state), from the first node that answers: after a kill, a survivor. Should two
# members both claim leadership for a moment, the one with the higher term is the leader.
cmd_leader() {
  local queue=$1 vhost=$2 n out leader errors=""
  for n in "${NODES[@]}"; do
    running "$n" || continue
    if ! out=$(ctl "$n" rabbitmq-queues -q --formatter json quorum_status --vhost "$vhost" "$queue" 2>&1); then
      errors+="  $(node_name "$n"): ${out//$'\n'/ }"$'\n'
      continue
    fi
    # One JSON object per member and line: {"Node Name":"op-cluster-1@localhost","Raft State":"leader",...,"Term":1,...}
    leader=$(awk -v prefix="\"Node Name\":\"$NAME_PREFIX" '
      /"Raft State":"leader"/ && match($0, prefix "[1-3]@") {
        number = substr($0, RSTART + length(prefix), 1)
        term = match($0, /"Term":[0-9]+/) ? substr($0, RSTART + 7, RLENGTH - 7) + 0 : 0
        if (term >= best) { best = term; leader = number }
      }
      END { if (leader != "") print leader }' <<<"$out")
    [[ $leader =~ ^[1-3]$ ]] && { echo "$leader"; return; }
    errors+="  $(node_name "$n"): no member is leader: ${out//$'\n'/ }"$'\n'
  done
  errors=${errors%$'\n'}
  die "no leader for quorum queue '$queue' (vhost '$vhost'):"$'\n'"${errors:-  no node is running}"
}

cmd_status() {
  local n pid
  for n in "${NODES[@]}"; do
    pid=$(node_pid "$n")
    if [[ -n $pid ]]; then
      printf '%s %s up pid=%s %s\n' "$n" "$(node_name "$n")" "$pid" "$(url "$n")"
    else
      printf '%s %s down\n' "$n" "$(node_name "$n")"
    fi
  done
}

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit "${1:-1}"
}

# `ctl N TOOL ARGS...`: a RabbitMQ CLI tool against node N of this cluster, with its cookie and
# CLI ports, e.g. `ctl 2 rabbitmqctl list_queues name leader members`.
cmd_ctl() {
  local n=$1 tool=$2
  shift 2
  check_node_number "$n"
  case $tool in
    rabbitmqctl | rabbitmq-queues | rabbitmq-diagnostics | rabbitmq-streams | rabbitmq-upgrade | rabbitmq-plugins) ;;
    *) die "ctl runs rabbitmqctl, rabbitmq-queues, rabbitmq-diagnostics, rabbitmq-streams, rabbitmq-upgrade or rabbitmq-plugins, not '$tool'" ;;
  esac
  [[ -d $BASE/home ]] || die "no cluster in $BASE; run start first"
  ctl "$n" "$tool" "$@"
}

main() {
  local args=() base=${RABBITMQ_CLUSTER_BASE:-${TMPDIR:-/tmp}/op-rabbitmq-cluster} vhost=/
  while (($#)); do
    case $1 in
      --base) [[ $# -ge 2 ]] || die "--base needs a directory"; base=$2; shift 2 ;;
      --base=*) base=${1#--base=}; shift ;;
      --vhost) [[ $# -ge 2 ]] || die "--vhost needs a name"; vhost=$2; shift 2 ;;
      -h | --help) usage 0 ;;
      ctl) args+=("$@"); break ;; # the rest belongs to the CLI tool
      *) args+=("$1"); shift ;;
    esac
  done
  ((${#args[@]})) || usage
  [[ -n $base ]] || die "--base needs a directory"
  [[ $base == /* ]] || base=$PWD/$base
  BASE=${base%/}
  declare -gA LAUNCHED=()
  local command=${args[0]}
  case $command in
    start | stop | clean | status | urls) [[ ${#args[@]} -eq 1 ]] || die "usage: $command (no argument)" ;;
    kill | restart) [[ ${#args[@]} -eq 2 ]] || die "usage: $command N (N = 1, 2 or 3)" ;;
    leader) [[ ${#args[@]} -eq 2 ]] || die "usage: leader QUEUE [--vhost VHOST]" ;;
    ctl) [[ ${#args[@]} -ge 3 ]] || die "usage: ctl N TOOL [ARGS...]" ;;
    *) die "unknown command '$command' (start, stop, clean, kill N, restart N, leader QUEUE, status, urls, ctl N TOOL ARGS)" ;;
  esac
  [[ $command == urls ]] && { urls; return; }
  SBIN=$(sbin_dir)
  case $command in
    start | stop | clean | kill | restart)
      exec 9>>"$LOCK_FILE"
      flock -w $((TIMEOUT * 3)) 9 || die "another rabbitmq-cluster.sh held $LOCK_FILE for $((TIMEOUT * 3))s"
      ;;
  esac
  case $command in
    start) cmd_start ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    kill) cmd_kill "${args[1]}" ;;
    restart) cmd_restart "${args[1]}" ;;
    leader) cmd_leader "${args[1]}" "$vhost" ;;
    status) cmd_status ;;
    ctl) cmd_ctl "${args[@]:1}" ;;
  esac
}

main "$@"
