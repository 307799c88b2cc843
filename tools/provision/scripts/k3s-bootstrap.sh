#!/usr/bin/env bash
# Install K3s on the nodes Terraform created, through the bastion, then fetch the kubeconfig.
#   1. the cluster: when no server runs K3s, the first one creates it (cluster-init), with TLS
#      SANs for the tunnel address and its private IP; when one does (a server Terraform replaced
#      comes back without K3s), every node joins the first server that runs it
#   2. other servers (HA): join that server with its node token
#   3. Traefik's settings (infra/k3s/traefik-config.yaml) into every server's manifests folder
#   4. agents: join with the node token
#   5. kubeconfig: fetched from that server, rewritten for the SSH tunnel (https://127.0.0.1:6443),
#      mode 600; refused when the local one is for another cluster (its CA differs) unless
#      CA4_KUBECONFIG_REPLACE=yes
#   6. wait until every node is Ready
# Idempotent: a node already running CA4_K3S_VERSION is left alone; the kubeconfig is only
# rewritten when it changed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

API_TUNNEL_ADDR="${CA4_API_TUNNEL_ADDR:-127.0.0.1}"
API_TUNNEL_PORT="${CA4_API_TUNNEL_PORT:-6443}"
K3S_MANIFESTS=/var/lib/rancher/k3s/server/manifests

cluster_hosts

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
  current="$(k3s_version "${host}")"
  if [[ "${current}" == "${CA4_K3S_VERSION}" ]]; then
    log "${role} ${host}: K3s ${current} already installed, unchanged"
    return 0
  fi
  log "${role} ${host}: installing K3s ${CA4_K3S_VERSION} (found '${current:-none}')"
  local installer
  installer="$(pinned_installer)"
  remote "${host}" "sudo INSTALL_K3S_VERSION='${CA4_K3S_VERSION}' sh -s - $*" <"${installer}"
}

# server_flags HOST: every server's flags, with its own private IP as a TLS SAN.
server_flags() {
  printf '%s\n' "--tls-san=${API_TUNNEL_ADDR}" "--tls-san=$1" --write-kubeconfig-mode=0600 --secrets-encryption
}

# The cluster lives on in any server that runs K3s: then every node joins through the first such
# server (`join`), and none creates a cluster of its own. Only when no server runs K3s is one
# created, on the first server. On a server whose embedded etcd already holds data, K3s starts
# from that data: --cluster-init and --server only matter on a node's first start, so upgrading
# the join server in place with --cluster-init keeps its membership.
join="$(running_server)"
if [[ -z "${join}" ]]; then
  join="${servers[0]}"
  # Agents that run K3s while no server does belong to a cluster whose servers are all gone (the
  # one server of dev, replaced): a new cluster here would leave them out. Stop before changing
  # anything.
  orphans=()
  for host in "${agents[@]}"; do
    version="$(k3s_version "${host}")"
    [[ -z "${version}" ]] || orphans+=("${host}")
  done
  [[ ${#orphans[@]} -eq 0 ]] ||
    die "no server runs K3s, but the agent(s) ${orphans[*]} do: their cluster's servers are gone (replaced?), with its data. To start a new cluster, uninstall K3s on them first (sudo /usr/local/bin/k3s-agent-uninstall.sh) and run this again with CA4_KUBECONFIG_REPLACE=yes; see docs/provisioning.md, \"Replacing a node\""
  log "no server runs K3s: creating the cluster on ${join}"
else
  log "the cluster runs on ${join}: every other node joins it there"
fi
mapfile -t flags < <(server_flags "${join}")
install_k3s "${join}" server server --cluster-init "${flags[@]}"
token="$(remote "${join}" 'sudo cat /var/lib/rancher/k3s/server/node-token')"
[[ -n "${token}" ]] || die "no node token on ${join}"

for host in "${servers[@]}"; do
  [[ "${host}" != "${join}" ]] || continue
  push_token "${host}" "${token}"
  mapfile -t flags < <(server_flags "${host}")
  install_k3s "${host}" server server "--server=https://${join}:6443" --token-file=/etc/rancher/k3s/ca4-token "${flags[@]}"
done

# Traefik's settings (infra/k3s/traefik-config.yaml) in every server's auto-deploy folder; K3s
# applies them, and again whenever the file changes.
for host in "${servers[@]}"; do
  remote "${host}" "sudo sh -c 'mkdir -p ${K3S_MANIFESTS} && cat > ${K3S_MANIFESTS}/ca4-traefik-config.yaml'" \
    <"${CA4_REPO_ROOT}/infra/k3s/traefik-config.yaml"
done

for host in "${agents[@]}"; do
  push_token "${host}" "${token}"
  install_k3s "${host}" agent agent "--server=https://${join}:6443" --token-file=/etc/rancher/k3s/ca4-token
done

# cluster_ca FILE: the certificate authority a kubeconfig trusts (base64), empty when none.
cluster_ca() {
  awk '$1 == "certificate-authority-data:" { print $2; exit }' "$1"
}

# Kubeconfig for the tunnel: K3s writes https://127.0.0.1:6443 already; pin it to the tunnel
# address anyway and name the context after the environment.
mkdir -p "$(dirname "${CA4_KUBECONFIG}")"
new_config="$(mktemp)"
trap 'rm -f "${new_config}"' EXIT
remote "${join}" 'sudo cat /etc/rancher/k3s/k3s.yaml' |
  sed -e "s#server: https://[^:]*:6443#server: https://${API_TUNNEL_ADDR}:${API_TUNNEL_PORT}#" \
    -e "s#: default\$#: ca4-${CA4_ENV}#" >"${new_config}"
if [[ -f "${CA4_KUBECONFIG}" ]] && cmp -s "${new_config}" "${CA4_KUBECONFIG}"; then
  log "kubeconfig ${CA4_KUBECONFIG} unchanged"
else
  # Another CA is another cluster: a new, empty one when a server was replaced and the cluster
  # re-created, to which kubectl and helm would silently switch.
  old_ca="$([[ -f "${CA4_KUBECONFIG}" ]] && cluster_ca "${CA4_KUBECONFIG}" || true)"
  if [[ -n "${old_ca}" && "${old_ca}" != "$(cluster_ca "${new_config}")" && "${CA4_KUBECONFIG_REPLACE:-}" != yes ]]; then
    die "the cluster on ${join} is not the one ${CA4_KUBECONFIG} is for (another certificate authority): kubectl and helm would switch to it, and the kubeconfig was left as it is. If it replaces the old cluster on purpose (the old one is gone), run this again with CA4_KUBECONFIG_REPLACE=yes; see docs/provisioning.md, \"Replacing a node\""
  fi
  install -m 600 "${new_config}" "${CA4_KUBECONFIG}"
  log "kubeconfig written to ${CA4_KUBECONFIG} (open the API tunnel with 'make ca4-api-tunnel')"
fi

expected=$((${#servers[@]} + ${#agents[@]}))
log "waiting for ${expected} node(s) to be Ready"
remote "${join}" "sudo k3s kubectl wait --for=condition=Ready nodes --all --timeout=300s && test \"\$(sudo k3s kubectl get nodes --no-headers | wc -l)\" -eq ${expected}" ||
  die "not every node is Ready (expected ${expected}); see 'sudo k3s kubectl get nodes' on ${join}. A node Terraform replaced stays listed, NotReady, under its old name until you delete it: kubectl delete node <old name> (docs/provisioning.md, \"Replacing a node\")"
log "K3s ${CA4_K3S_VERSION} is up on ${expected} node(s)"
