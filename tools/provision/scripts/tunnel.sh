#!/usr/bin/env bash
# Open an SSH tunnel through the bastion, in the background, unless its local port already answers.
#   tunnel.sh api     localhost:6443 -> first K3s server :6443 (kubectl, helm)
#   tunnel.sh kafka   localhost:9092+N -> NodePort 30094+N of broker N on its node (the TUNNEL
#                     listener advertises localhost:9092+N, so clients keep using the tunnel)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind="${1:-}"
case "${kind}" in
  api | kafka) ;;
  *) die "usage: $0 api|kafka" ;;
esac

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cluster_hosts

forwards=()
if [[ "${kind}" == api ]]; then
  local_port="${CA4_API_TUNNEL_PORT:-6443}"
  forwards+=(-L "127.0.0.1:${local_port}:${servers[0]}:6443")
else
  local_port="${CA4_KAFKA_TUNNEL_PORT:-9092}"
  for ((i = 0; i < ${CA4_KAFKA_BROKERS:-1}; i++)); do
    # The tunnel NodePorts keep the client's address (externalTrafficPolicy Local), so each one
    # answers only on the node that runs its broker.
    node="$(kubectl --kubeconfig "${CA4_KUBECONFIG}" -n "${CA4_PLATFORM_NAMESPACE:-platform}" \
      get pod "kafka-${i}" -o jsonpath='{.status.hostIP}')" || node=""
    [[ -n "${node}" ]] || die "cannot find the node of kafka-${i}: open the API tunnel first (make ca4-api-tunnel)"
    forwards+=(-L "127.0.0.1:$((local_port + i)):${node}:$((${CA4_KAFKA_NODE_PORT_BASE:-30094} + i))")
  done
fi

if port_open "${local_port}"; then
  log "${kind} tunnel: 127.0.0.1:${local_port} already answers, nothing to do"
  exit 0
fi
ssh "${SSH_OPTS[@]}" -f -N -o ExitOnForwardFailure=yes "${forwards[@]}" "${SSH_JUMP}"
log "${kind} tunnel open on 127.0.0.1:${local_port} (stop it with: pkill -f 'ssh.*-L 127.0.0.1:${local_port}')"
