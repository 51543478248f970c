#!/usr/bin/env bash
# A small chaos drill on the local stack: freezes one Redis master with SIGSTOP, keeps it frozen
# for a few seconds (longer than cluster-node-timeout, 3 s, so its replica normally takes over),
# then resumes it with SIGCONT and waits for the cluster to be healthy again. Only a node started
# by up.sh (found through its pid file) is ever touched.
#
# Usage: deploy/local/chaos.sh [--port PORT] [--seconds N]
#   --port PORT   the master to pause (default: a random master of the local cluster)
#   --seconds N   how long to pause it (default 5)
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sf_usage "${BASH_SOURCE[0]}"; }

port=""
seconds=5
while (($#)); do
  case "$1" in
    --port)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--port needs a port number"
      port="$2"
      shift
      ;;
    --seconds)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--seconds needs a whole number of seconds"
      seconds="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

sf_validate_ports
command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found: run deploy/local/up.sh first"

# Any live node of ours answers CLUSTER NODES.
nodes_from() {
  local p out
  for p in "$@" $(sf_redis_ports); do
    if out="$(sf_redis_cli "$p" cluster nodes 2>/dev/null | tr -d '\r')" && [[ -n "$out" ]]; then
      echo "$out"
      return 0
    fi
  done
  return 1
}

# One line per node: "port role [master-port] slots", sorted by port.
describe_cluster() {
  local nodes
  nodes="$(nodes_from "$@")" || { echo "  (no node answers)"; return 0; }
  awk '
    { id[$1] = $2; sub(/@.*/, "", id[$1]); sub(/.*:/, "", id[$1]) }
    { line[NR] = $0 }
    END {
      for (i = 1; i <= NR; i++) {
        split(line[i], f, " ")
        addr = f[2]; sub(/@.*/, "", addr); port = addr; sub(/.*:/, "", port)
        flags = f[3]; gsub(/myself,/, "", flags)
        slots = ""
        for (j = 9; j in f; j++) slots = slots " " f[j]
        if (flags ~ /slave/) desc = "replica of " id[f[4]]
        else desc = "master, slots" slots
        if (flags ~ /fail\?/) desc = desc "  [suspected down: pfail]"
        else if (flags ~ /fail/) desc = desc "  [down: fail]"
        printf "  %s  %s\n", port, desc
      }
    }' <<<"$nodes" | sort -n
}

cluster_ok() {
  local p
  for p in $(sf_redis_ports); do
    [[ "$(sf_cluster_info_field "$p" cluster_state)" == ok ]] || return 1
  done
}

cluster_ok || die "the local Redis Cluster is not healthy (or not running): deploy/local/up.sh first"

nodes="$(nodes_from)"
mapfile -t masters < <(awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 { a = $2; sub(/@.*/, "", a); sub(/.*:/, "", a); print a }' <<<"$nodes" | sort -n)
((${#masters[@]})) || die "no healthy master found"
if [[ -z "$port" ]]; then
  port="${masters[RANDOM % ${#masters[@]}]}"
elif ! printf '%s\n' "${masters[@]}" | grep -qx "$port"; then
  die "127.0.0.1:$port is not a healthy master of the local cluster (masters: ${masters[*]})"
fi

pidfile="$(sf_redis_pidfile "$port")"
pid="$(sf_running "$pidfile" "redis-server 127.0.0.1:$port ")" ||
  die "no live redis-server for port $port in $pidfile (only nodes started by up.sh are touched)"
master_id="$(awk -v p=":$port@" 'index($2, p) { print $1 }' <<<"$nodes")"
replica="$(awk -v id="$master_id" '$4 == id { a = $2; sub(/@.*/, "", a); sub(/.*:/, "", a); print a; exit }' <<<"$nodes")"

echo "Before:"
describe_cluster
echo
log "pausing redis master 127.0.0.1:$port (pid $pid) with SIGSTOP for ${seconds}s (cluster-node-timeout is 3s; its replica is ${replica:+127.0.0.1:}${replica:-none})"

resume() {
  if kill -CONT "$pid" 2>/dev/null; then
    log "resumed 127.0.0.1:$port (pid $pid) with SIGCONT"
  fi
}
# Never leave the node frozen, whatever happens to this script.
trap resume EXIT
trap 'exit 130' INT TERM

kill -STOP "$pid"
for ((s = 1; s <= seconds; s++)); do
  sleep 1
  # Ask the replica (the frozen master cannot answer).
  view="${replica:-${masters[0]}}"
  [[ "$view" == "$port" ]] && view="$(sf_redis_ports | grep -vx "$port" | head -n1)"
  state="$(sf_cluster_info_field "$view" cluster_state)"
  role="$(sf_redis_cli "$view" role 2>/dev/null | head -n1 | tr -d '\r' | sed s/slave/replica/)"
  printf '  t+%ss  cluster_state (seen by %s): %s%s\n' "$s" "$view" "${state:-?}" \
    "${replica:+, $replica is $role}"
done
resume
trap - EXIT

log "waiting for every node to report cluster_state:ok"
for ((i = 0; i < 300; i++)); do
  cluster_ok && break
  sleep 0.1
done
if ! cluster_ok; then
  describe_cluster "$replica"
  die "the cluster did not recover within 30s"
fi
echo
echo "After:"
describe_cluster "$replica"
if [[ -n "$replica" && "$(sf_redis_cli "$replica" role 2>/dev/null | head -n1 | tr -d '\r')" == master ]]; then
  log "failover happened: 127.0.0.1:$replica was promoted; 127.0.0.1:$port rejoined as its replica"
else
  log "no failover: 127.0.0.1:$port is still the master (pause shorter than the failure detection?)"
fi
