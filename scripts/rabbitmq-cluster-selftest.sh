#!/usr/bin/env bash
# Self-check of scripts/rabbitmq-cluster.sh against a real cluster, through its command line as a
# test would use it: two concurrent cold starts, a quorum queue declared on node 1 with messages
# published over AMQP (pika), SIGKILL of the queue's leader, a new leader and every message still
# there, the killed node restarted and rejoined (it serves the queue again), a full stop and a warm
# start that keeps the data, the same after SIGKILL of all three nodes, then clean. It prints the
# measured times and finally checks that the shared broker (127.0.0.1:5672) and epmd are the same
# processes as before and still answer.
#
# It uses its own base dir and the cluster's fixed ports, so it refuses to run while a cluster is
# up (other tests may be using it). pika is installed from PyPI into a private directory
# (${TMPDIR:-/tmp}/op-rabbitmq-cluster-pylib) the first time. Exits non-zero on the first failure,
# keeping the nodes' logs (the base dir is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CLUSTER=scripts/rabbitmq-cluster.sh
readonly PIKA=pika==1.4.4
readonly PYLIB=${TMPDIR:-/tmp}/op-rabbitmq-cluster-pylib

step() { printf '[cluster-selftest] %s\n' "$*"; }
fail() { printf '[cluster-selftest] FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in 5681 5682 5683 25681 25682 25683; do
  port_open "$port" && fail "port $port is in use: a cluster (or something else) is running; stop it first (scripts/rabbitmq-cluster.sh stop) if no test is using it"
done

# The shared broker and epmd, identified by the process listening on exactly that address (other
# loopback addresses may have their own port 5672): its name, pid and start time (field 22 of
# /proc/PID/stat).
listener_identity() { # address:port
  local pid
  pid=$(ss -Hltnp src "$1" | awk '!found && match($0, /pid=[0-9]+/) { print substr($0, RSTART + 4, RLENGTH - 4); found = 1 }')
  [[ -n $pid ]] || { echo "nothing listening on $1"; return; }
  echo "$(cat "/proc/$pid/comm") pid $pid started at tick $(awk '{print $22}' "/proc/$pid/stat")"
}
shared_broker_before=$(listener_identity 127.0.0.1:5672)
shared_dist_before=$(listener_identity 127.0.0.1:25672)
epmd_before=$(listener_identity 127.0.0.1:4369)

if ! PYTHONPATH=$PYLIB python3 -c 'import pika' 2>/dev/null; then
  step "installing $PIKA into $PYLIB"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$PYLIB" "$PIKA" >/dev/null
fi

# A small AMQP client: declare, publish (with publisher confirms), get (and ack) up to N messages.
read -r -d '' AMQP_CLIENT <<'PY' || true
import sys
import pika

command, url, queue, *rest = sys.argv[1:]
parameters = pika.URLParameters(url)
parameters.connection_attempts = 1
parameters.socket_timeout = 5
connection = pika.BlockingConnection(parameters)
channel = connection.channel()
if command == "declare":
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
elif command == "publish":
    channel.confirm_delivery()  # basic_publish raises unless the broker confirms
    for body in rest:
        channel.basic_publish("", queue, body.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
elif command == "get":
    for _ in range(int(rest[0])):
        method, _properties, body = channel.basic_get(queue)
        if method is None:
            break
        print(body.decode())
        channel.basic_ack(method.delivery_tag)
else:
    sys.exit(f"unknown command {command}")
connection.close()
PY
amqp() { PYTHONPATH=$PYLIB timeout 60 python3 -c "$AMQP_CLIENT" "$@"; }

base=$(mktemp -d "${TMPDIR:-/tmp}/op-rabbitmq-cluster-selftest.XXXXXX")
cluster() { "$CLUSTER" --base "$base" "$@"; }
finish() {
  local status=$?
  if ((status == 0)); then
    cluster clean
  else
    cluster stop || true
    echo "[cluster-selftest] nodes stopped; their data and logs are kept in $base" >&2
  fi
}
trap finish EXIT

expected_urls=amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f
url_of() { echo "amqp://guest:guest@127.0.0.1:$((5680 + $1))/%2f"; }

# 1. Two starts at once: one forms the cluster, the other waits on the lock; both print the URLs.
t=$(now)
cluster start >"$base.start1" 2>&1 & first=$!
cluster start >"$base.start2" 2>&1 & second=$!
wait "$first" || fail "first concurrent start: $(cat "$base.start1")"
wait "$second" || fail "second concurrent start: $(cat "$base.start2")"
cold_start=$(since "$t")
for out in "$base.start1" "$base.start2"; do
  [[ $(cat "$out") == "$expected_urls" ]] || fail "start printed '$(cat "$out")', expected '$expected_urls'"
done
rm -f "$base.start1" "$base.start2"
step "cold start (two concurrent starts, 3 nodes booted and clustered): ${cold_start}s"
[[ $(cluster status | grep -c ' up ') == 3 ]] || fail "not all nodes up: $(cluster status)"
members=$(cluster ctl 1 rabbitmqctl -q eval 'lists:sort(rabbit_nodes:all_running()).')
[[ $members == "['op-cluster-1@localhost','op-cluster-2@localhost','op-cluster-3@localhost']" ]] ||
  fail "node 1 sees running members $members"
t=$(now)
[[ $(cluster start) == "$expected_urls" ]] || fail "start on a running cluster printed something else"
step "start on the running cluster: $(since "$t")s, same URLs"
[[ $(cluster urls) == "$expected_urls" ]] || fail "urls printed '$(cluster urls)'"

# 2. A quorum queue declared on node 1, five persistent messages confirmed.
queue=selftest.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
sent=(m1 m2 m3 m4 m5)
amqp declare "$(url_of 1)" "$queue"
amqp publish "$(url_of 1)" "$queue" "${sent[@]}"
t=$(now)
leader=$(cluster leader "$queue")
step "quorum queue $queue declared on node 1, ${#sent[@]} messages confirmed; leader: node $leader (query took $(since "$t")s)"
[[ $leader == 1 ]] || fail "the leader of a queue declared on node 1 is node $leader"

# 3. SIGKILL the leader; a survivor takes over and every message is still there.
t=$(now)
cluster kill "$leader"
[[ $(cluster status) =~ (^|$'\n')"$leader op-cluster-$leader@localhost down"($'\n'|$) ]] || fail "node $leader still up after kill: $(cluster status)"
survivor=$((leader % 3 + 1))
amqp publish "$(url_of "$survivor")" "$queue" m6 # blocks until the new leader has committed it
writable_after=$(since "$t")
new_leader=""
while :; do
  new_leader=$(cluster leader "$queue" 2>/dev/null || true)
  [[ -n $new_leader && $new_leader != "$leader" ]] && break
  awk -v a="$t" -v b="$(now)" 'BEGIN { exit !(b - a > 30) }' && fail "no new leader 30s after killing node $leader"
  sleep 0.2
done
leader_after=$(since "$t")
step "killed node $leader: a publish via node $survivor was confirmed after ${writable_after}s; leader reported: node $new_leader after ${leader_after}s"
got=$(amqp get "$(url_of "$survivor")" "$queue" 5 | paste -sd ' ')
[[ $got == "${sent[*]}" ]] || fail "after the kill node $survivor delivered '$got', expected '${sent[*]}'"
step "node $survivor delivered all ${#sent[@]} messages published before the kill, in order"
if cluster kill "$leader" 2>/dev/null; then fail "kill of a node that is down succeeded"; fi

# 4. Restart the killed node: it rejoins and serves the queue (the message published while it
# was down) over its own AMQP port.
t=$(now)
cluster restart "$leader"
restart_time=$(since "$t")
[[ $(cluster status | grep -c ' up ') == 3 ]] || fail "not all nodes up after restart: $(cluster status)"
# Its queue member recovers from its log and follows the leader again.
while :; do
  states=$(cluster ctl "$leader" rabbitmq-queues -q --formatter json quorum_status "$queue" | grep -o '"Raft State":"[a-z]*"' | cut -d'"' -f4 | sort | paste -sd ' ')
  [[ $states == "follower follower leader" ]] && break
  awk -v a="$t" -v b="$(now)" 'BEGIN { exit !(b - a > 60) }' && fail "quorum members 60s after the restart: $states"
  sleep 0.5
done
members_back=$(since "$t")
got=$(amqp get "$(url_of "$leader")" "$queue" 5 | paste -sd ' ')
[[ $got == m6 ]] || fail "restarted node $leader delivered '$got', expected 'm6'"
step "restarted node $leader in ${restart_time}s (rejoined, answers AMQP); queue members 1 leader + 2 followers after ${members_back}s; it delivered m6 over its own port"

# 5. Full stop, warm start: the cluster forms again with its data.
amqp publish "$(url_of 3)" "$queue" m7
t=$(now)
cluster stop
stop_time=$(since "$t")
for port in 5681 5682 5683 25681 25682 25683; do port_open "$port" && fail "port $port still open after stop"; done
t=$(now)
[[ $(cluster start) == "$expected_urls" ]] || fail "warm start printed something else"
warm_start=$(since "$t")
got=$(amqp get "$(url_of 2)" "$queue" 5 | paste -sd ' ')
[[ $got == m7 ]] || fail "after stop and start node 2 delivered '$got', expected 'm7'"
step "stop: ${stop_time}s; warm start: ${warm_start}s; the message published before the stop was delivered after it"

# 6. SIGKILL of all three (what happens to nodes left running when a CI run ends): the next start
# brings the cluster back with its data.
amqp publish "$(url_of 3)" "$queue" m8
for n in 1 2 3; do cluster kill "$n"; done
[[ $(cluster status | grep -c ' down$') == 3 ]] || fail "not all nodes down after killing them: $(cluster status)"
t=$(now)
[[ $(cluster start) == "$expected_urls" ]] || fail "start after killing every node printed something else"
killed_start=$(since "$t")
got=$(amqp get "$(url_of 1)" "$queue" 5 | paste -sd ' ')
[[ $got == m8 ]] || fail "after every node was killed and started node 1 delivered '$got', expected 'm8'"
step "start after SIGKILL of all three nodes: ${killed_start}s; the message published before was delivered"

# 7. Clean removes everything of this cluster.
trap - EXIT
cluster clean
[[ ! -e $base ]] || fail "clean left $base"
for port in 5681 5682 5683; do port_open "$port" && fail "port $port still open after clean"; done
step "clean: base dir removed, ports closed"

# 8. The shared broker and epmd were not touched.
[[ $(listener_identity 127.0.0.1:5672) == "$shared_broker_before" ]] || fail "shared broker on 5672 changed: was $shared_broker_before, now $(listener_identity 127.0.0.1:5672)"
[[ $(listener_identity 127.0.0.1:25672) == "$shared_dist_before" ]] || fail "shared node's distribution listener changed: was $shared_dist_before, now $(listener_identity 127.0.0.1:25672)"
[[ $(listener_identity 127.0.0.1:4369) == "$epmd_before" ]] || fail "epmd changed: was $epmd_before, now $(listener_identity 127.0.0.1:4369)"
(
  exec 3<>/dev/tcp/127.0.0.1/5672
  printf 'AMQP\x00\x00\x09\x01' >&3
  IFS= read -r -t 3 -N 1 -u 3 frame_type
  [[ $frame_type == $'\x01' ]]
) 2>/dev/null || fail "the shared broker on 127.0.0.1:5672 does not answer AMQP"
step "shared broker 127.0.0.1:5672 untouched ($shared_broker_before) and answering; epmd untouched ($epmd_before)"
step "passed"
