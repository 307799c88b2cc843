#!/usr/bin/env bash
# Open an SSH tunnel through the bastion, in the background, unless it is already open. A local port
# that answers but is not this tunnel (the local dev stack's Kafka, say) is refused, by name.
#   tunnel.sh api     localhost:6443 -> K3s server :6443 (kubectl, helm): the first server that
#                     runs K3s (every server serves the API; a replaced one may not run it yet);
#                     an open tunnel to any server of the cluster is kept
#   tunnel.sh kafka   localhost:9092+N -> NodePort 30094+N of broker N on its node (the TUNNEL
#                     listener advertises localhost:9092+N, so clients keep using the tunnel),
#                     for every broker the StatefulSet runs (or CA4_KAFKA_BROKERS)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind="${1:-}"
case "${kind}" in
  api | kafka) ;;
  *) die "usage: $0 api|kafka" ;;
esac

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# tunnel_pids SPEC: the ssh processes forwarding exactly SPEC (-L SPEC), as this script starts them;
# SPEC may hold an ERE alternation, (a|b), of its addresses.
tunnel_pids() {
  local pattern="ssh .*-L ${1//./[.]}( |$)"
  pgrep -f "${pattern}" || true
}

cluster_hosts

# forwards: the -L specs to open; accepted: for each, the spec an open tunnel may hold instead,
# and described: where that goes, in words.
forwards=()
accepted=()
described=()
if [[ "${kind}" == api ]]; then
  local_port="${CA4_API_TUNNEL_PORT:-6443}"
  # The server is looked up (over ssh) only when the tunnel is to be opened: see below.
  forwards+=("127.0.0.1:${local_port}:SERVER:6443")
  accepted+=("127.0.0.1:${local_port}:($(IFS='|' && printf '%s' "${servers[*]}")):6443")
  described+=("port 6443 of a K3s server: ${servers[*]}")
else
  local_port="${CA4_KAFKA_TUNNEL_PORT:-9092}"
  # Every broker: a client that reaches one is sent on to the others' advertised ports (the
  # group coordinator, partition leaders), which answer only through their own forward.
  brokers="${CA4_KAFKA_BROKERS:-}"
  if [[ -n "${brokers}" ]]; then
    [[ "${brokers}" =~ ^[1-9][0-9]*$ ]] || die "CA4_KAFKA_BROKERS must be a number of brokers, not '${brokers}'"
  else
    brokers="$(kubectl --kubeconfig "${CA4_KUBECONFIG}" -n "${CA4_PLATFORM_NAMESPACE:-platform}" \
      get statefulset kafka -o jsonpath='{.spec.replicas}')" || brokers=""
    [[ "${brokers}" =~ ^[1-9][0-9]*$ ]] || die "cannot read how many Kafka brokers run (statefulset kafka): open the API tunnel first (make ca4-api-tunnel), or set CA4_KAFKA_BROKERS"
  fi
  for ((i = 0; i < brokers; i++)); do
    # The tunnel NodePorts keep the client's address (externalTrafficPolicy Local), so each one
    # answers only on the node that runs its broker.
    node="$(kubectl --kubeconfig "${CA4_KUBECONFIG}" -n "${CA4_PLATFORM_NAMESPACE:-platform}" \
      get pod "kafka-${i}" -o jsonpath='{.status.hostIP}')" || node=""
    [[ -n "${node}" ]] || die "cannot find the node of kafka-${i}: open the API tunnel first (make ca4-api-tunnel)"
    forwards+=("127.0.0.1:$((local_port + i)):${node}:$((${CA4_KAFKA_NODE_PORT_BASE:-30094} + i))")
    accepted+=("${forwards[-1]}")
    described+=("${forwards[-1]#*:*:}")
  done
fi

# A local port that already answers is fine only when this tunnel holds it: anything else there
# (the local dev stack's Kafka on 9092, a local cluster's API on 6443) would silently take the
# clients that believe they reach the cluster.
command -v pgrep >/dev/null 2>&1 || die "missing tool: pgrep (to tell this tunnel from another program on a local port)"
to_open=()
for i in "${!forwards[@]}"; do
  spec="${forwards[i]}"
  port="${spec#127.0.0.1:}"
  port="${port%%:*}"
  if ! port_open "${port}"; then
    to_open+=(-L "${spec}")
  elif [[ -n "$(tunnel_pids "${accepted[i]}")" ]]; then
    log "${kind} tunnel: 127.0.0.1:${port} is already this tunnel (${described[i]}), nothing to do"
  elif [[ -n "$(tunnel_pids "127.0.0.1:${port}:[^ ]*")" ]]; then
    if [[ "${kind}" == api ]]; then knob=CA4_API_TUNNEL_PORT; else knob=CA4_KAFKA_TUNNEL_PORT; fi
    die "127.0.0.1:${port} is an ssh tunnel to another address than ${described[i]}: another ENV's tunnel (give each ENV its own port: ${knob}, see docs/provisioning.md), or an old one (the pod moved, or the server was replaced)? Stop it (pkill -f 'ssh.*-L 127.0.0.1:${port}:') and run this again"
  elif [[ "${kind}" == kafka ]]; then
    die "127.0.0.1:${port} is taken by another program, not this tunnel (the local dev stack's Kafka? stop it: make devstack-down, or docker compose stop kafka), so clients would reach it instead of the cluster's Kafka"
  else
    die "127.0.0.1:${port} is taken by another program, not this tunnel (a local Kubernetes API?): stop it, so that kubectl reaches the cluster"
  fi
done
[[ ${#to_open[@]} -gt 0 ]] || exit 0
if [[ "${kind}" == api ]]; then
  # After Terraform replaced the first server, its new instance runs no K3s until the next
  # `make ca4-bootstrap-k3s`; kubectl is needed before that (kubectl delete node), on a server
  # that runs it.
  server="$(running_server)"
  [[ -n "${server}" ]] || { server="${servers[0]}"; log "no server runs K3s yet: tunnelling to ${server}"; }
  to_open=("${to_open[@]/:SERVER:/:${server}:}")
fi
ssh "${SSH_OPTS[@]}" -f -N -o ExitOnForwardFailure=yes "${to_open[@]}" "${SSH_JUMP}"
log "${kind} tunnel open on 127.0.0.1:${local_port} (stop it with: pkill -f 'ssh.*-L 127.0.0.1:${local_port}:')"
