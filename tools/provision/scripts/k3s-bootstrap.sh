#!/usr/bin/env bash
# Install K3s on the nodes Terraform created, through the bastion, then fetch the kubeconfig.
#   1. first server: install (cluster-init), TLS SANs for the tunnel address and its private IP
#   2. other servers (HA): join the first one with the node token
#   3. agents: join with the node token
#   4. kubeconfig: fetched, rewritten for the SSH tunnel (https://127.0.0.1:6443), mode 600
#   5. wait until every node is Ready
# Idempotent: a node already running CA4_K3S_VERSION is left alone; the kubeconfig is only
# rewritten when it changed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

API_TUNNEL_ADDR="${CA4_API_TUNNEL_ADDR:-127.0.0.1}"
API_TUNNEL_PORT="${CA4_API_TUNNEL_PORT:-6443}"

cluster_hosts
first="${servers[0]}"

# installed_version HOST: the K3s version running on HOST, empty when none.
installed_version() {
  remote "$1" 'k3s --version 2>/dev/null | head -n1 | cut -d" " -f3 || true'
}

# push_token HOST TOKEN: write the join token to a root-only file (never on a command line).
push_token() {
  printf '%s' "$2" | remote "$1" 'sudo sh -c "umask 077; mkdir -p /etc/rancher/k3s; cat > /etc/rancher/k3s/ca4-token"'
}

# pinned_installer: path of the K3s installer, downloaded once per version and refused unless its
# sha256 is CA4_K3S_INSTALLER_SHA256 (never `curl | sh` from a moving URL).
pinned_installer() {
  local installer="${CA4_STATE_DIR}/k3s-install-${CA4_K3S_VERSION}.sh"
  [[ -n "${CA4_K3S_INSTALLER_SHA256}" ]] ||
    die "CA4_K3S_INSTALLER_SHA256 is not pinned for ${CA4_K3S_VERSION}: see the comment in lib.sh"
  if ! printf '%s  %s\n' "${CA4_K3S_INSTALLER_SHA256}" "${installer}" | sha256sum --check --status 2>/dev/null; then
    curl -sfL --proto '=https' -o "${installer}.part" "${CA4_K3S_INSTALLER_URL}" ||
      die "cannot download the K3s installer from ${CA4_K3S_INSTALLER_URL}"
    printf '%s  %s\n' "${CA4_K3S_INSTALLER_SHA256}" "${installer}.part" | sha256sum --check --status ||
      { rm -f "${installer}.part"; die "the K3s installer at ${CA4_K3S_INSTALLER_URL} does not match its pinned sha256"; }
    mv "${installer}.part" "${installer}"
  fi
  printf '%s' "${installer}"
}

install_k3s() {
  local host="$1" role="$2"
  shift 2
  local current
  current="$(installed_version "${host}")"
  if [[ "${current}" == "${CA4_K3S_VERSION}" ]]; then
    log "${role} ${host}: K3s ${current} already installed, unchanged"
    return 0
  fi
  log "${role} ${host}: installing K3s ${CA4_K3S_VERSION} (found '${current:-none}')"
  local installer
  installer="$(pinned_installer)"
  remote "${host}" "sudo INSTALL_K3S_VERSION='${CA4_K3S_VERSION}' sh -s - $*" <"${installer}"
}

server_flags=(
  "--tls-san=${API_TUNNEL_ADDR}" "--tls-san=${first}"
  --write-kubeconfig-mode=0600 --secrets-encryption
)

install_k3s "${first}" server server --cluster-init "${server_flags[@]}"
token="$(remote "${first}" 'sudo cat /var/lib/rancher/k3s/server/node-token')"
[[ -n "${token}" ]] || die "no node token on ${first}"

for host in "${servers[@]:1}"; do
  push_token "${host}" "${token}"
  install_k3s "${host}" server server "--server=https://${first}:6443" --token-file=/etc/rancher/k3s/ca4-token "${server_flags[@]}"
done

for host in "${agents[@]}"; do
  push_token "${host}" "${token}"
  install_k3s "${host}" agent agent "--server=https://${first}:6443" --token-file=/etc/rancher/k3s/ca4-token
done

# Kubeconfig for the tunnel: K3s writes https://127.0.0.1:6443 already; pin it to the tunnel
# address anyway and name the context after the environment.
mkdir -p "$(dirname "${CA4_KUBECONFIG}")"
new_config="$(mktemp)"
trap 'rm -f "${new_config}"' EXIT
remote "${first}" 'sudo cat /etc/rancher/k3s/k3s.yaml' |
  sed -e "s#server: https://[^:]*:6443#server: https://${API_TUNNEL_ADDR}:${API_TUNNEL_PORT}#" \
    -e "s#: default\$#: ca4-${CA4_ENV}#" >"${new_config}"
if [[ -f "${CA4_KUBECONFIG}" ]] && cmp -s "${new_config}" "${CA4_KUBECONFIG}"; then
  log "kubeconfig ${CA4_KUBECONFIG} unchanged"
else
  install -m 600 "${new_config}" "${CA4_KUBECONFIG}"
  log "kubeconfig written to ${CA4_KUBECONFIG} (open the API tunnel with 'make ca4-api-tunnel')"
fi

expected=$((${#servers[@]} + ${#agents[@]}))
log "waiting for ${expected} node(s) to be Ready"
remote "${first}" "sudo k3s kubectl wait --for=condition=Ready nodes --all --timeout=300s && test \"\$(sudo k3s kubectl get nodes --no-headers | wc -l)\" -eq ${expected}" ||
  die "not every node is Ready (expected ${expected}); see 'sudo k3s kubectl get nodes' on ${first}"
log "K3s ${CA4_K3S_VERSION} is up on ${expected} node(s)"
