#!/usr/bin/env bash
# Shared helpers of the CA4 provisioning scripts. Source it; do not run it.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file

CA4_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CA4_ENV="${CA4_ENV:-dev}"
CA4_TF_DIR="${CA4_TF_DIR:-${CA4_REPO_ROOT}/infra/terraform/stacks/ca4}"
CA4_KUBECONFIG="${CA4_KUBECONFIG:-${HOME}/.kube/ca4-${CA4_ENV}.yaml}"
# K3s release pinned for every node; the Helm charts and the schema tests target the same minor.
CA4_K3S_VERSION="${CA4_K3S_VERSION:-v1.33.5+k3s1}"
# The K3s installer (install.sh installs whichever release INSTALL_K3S_VERSION names), fetched on
# the operator's machine at a pinned tag and run on a node only when its sha256 is this pinned one
# (the installer then checks the k3s binary against the release's sha256sum file). The pin is
# install.sh at v1.36.4+k3s1, the digest two unrelated public projects pin for that file; it
# could not be recomputed from this project's build machines (no GitHub access). To re-pin:
#   curl -sfL "https://raw.githubusercontent.com/k3s-io/k3s/<tag>/install.sh" | sha256sum
CA4_K3S_INSTALLER_TAG="${CA4_K3S_INSTALLER_TAG:-v1.36.4%2Bk3s1}"
CA4_K3S_INSTALLER_URL="${CA4_K3S_INSTALLER_URL:-https://raw.githubusercontent.com/k3s-io/k3s/${CA4_K3S_INSTALLER_TAG}/install.sh}"
CA4_K3S_INSTALLER_SHA256="${CA4_K3S_INSTALLER_SHA256:-46177d4c99440b4c0311b67233823a8e8a2fc09693f6c89af1a7161e152fbfad}"

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# SCRIPT --help (or -h): print the script's header comment and exit, before any work. lib.sh is
# sourced without arguments, so "$1" here is the script's own first argument.
if [[ "${1:-}" == --help || "${1:-}" == -h ]]; then
  awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "$0"
  exit 0
fi

# Project-local state of the provisioning scripts (ssh config, known_hosts, downloads, Terraform's
# data dir); git-ignored. Absolute, since terraform -chdir reads TF_DATA_DIR from its new folder.
CA4_STATE_DIR="${CA4_STATE_DIR:-${CA4_REPO_ROOT}/.ca4/${CA4_ENV}}"
[[ "${CA4_STATE_DIR}" == /* ]] || CA4_STATE_DIR="${PWD}/${CA4_STATE_DIR}"
CA4_SSH_CONFIG="${CA4_STATE_DIR}/ssh_config"
CA4_KNOWN_HOSTS="${CA4_STATE_DIR}/known_hosts"
# Each ENV has its own Terraform data dir (the backend it was initialised with, the providers), as
# mk/infra.mk sets it: one shared .terraform would answer with whichever ENV was initialised last.
export TF_DATA_DIR="${CA4_STATE_DIR}/terraform"

# tf_check_state: stop unless ENV's Terraform data dir is initialised and the state behind it is
# ENV's (its `environment` output). Checked once per shell: call it before reading outputs in
# command substitutions, which would each check again.
CA4_TF_STATE_CHECKED=""
tf_check_state() {
  [[ -z "${CA4_TF_STATE_CHECKED}" ]] || return 0
  [[ -f "${TF_DATA_DIR}/terraform.tfstate" ]] ||
    die "Terraform is not initialised for ENV=${CA4_ENV} (no backend in its data dir ${TF_DATA_DIR}): run 'make ca4-tf-init ENV=${CA4_ENV}'"
  local found
  found="$(terraform -chdir="${CA4_TF_DIR}" output -raw environment)" ||
    die "cannot read the output 'environment' of ENV=${CA4_ENV}'s Terraform state (above): run 'make ca4-tf-init ENV=${CA4_ENV}', and 'make ca4-apply ENV=${CA4_ENV}' if the stack was never applied"
  [[ "${found}" == "${CA4_ENV}" ]] ||
    die "the Terraform data dir ${TF_DATA_DIR} holds ENV=${found:-?}'s state, not ENV=${CA4_ENV}'s: run 'make ca4-tf-init ENV=${CA4_ENV}' (and give each ENV its own CA4_STATE_DIR)"
  CA4_TF_STATE_CHECKED=1
}

# tf_output NAME: one Terraform output of ENV's state as raw text.
tf_output() {
  tf_check_state
  terraform -chdir="${CA4_TF_DIR}" output -raw "$1"
}

# tf_output_list NAME: a list(string) output of ENV's state as whitespace-separated words.
tf_output_list() {
  tf_check_state
  terraform -chdir="${CA4_TF_DIR}" output -json "$1" | tr -d '[]" \n' | tr ',' ' '
}

# ssh_opts BASTION USER [PRIVATE_HOST...]: write the ssh config every ssh of these scripts reads
# (-F), and fill SSH_OPTS and SSH_JUMP. Options given on the ssh command line (-o, -i) do not reach
# a ProxyJump hop, which OpenSSH starts as `ssh -F CONFIG -W ...`: so the host-key policy
# (accept-new: first contact is trusted, a changed key is refused), the project-local known_hosts,
# BatchMode and CA4_SSH_IDENTITY live in the config file, which both the hop and the target read.
ssh_opts() {
  local bastion="$1" user="$2"
  shift 2
  mkdir -p "${CA4_STATE_DIR}"
  chmod 700 "${CA4_STATE_DIR}"
  local new_config
  new_config="$(mktemp)"
  {
    printf '# Written by tools/provision/scripts/lib.sh for ENV=%s; rewritten on every run.\n' "${CA4_ENV}"
    if [[ $# -gt 0 ]]; then
      printf 'Host %s\n  User %s\n  ProxyJump %s@%s\n' "$*" "${user}" "${user}" "${bastion}"
    fi
    printf 'Host *\n'
    printf '  %s\n' 'BatchMode yes' 'ConnectTimeout 15' 'ServerAliveInterval 30' \
      'StrictHostKeyChecking accept-new' "UserKnownHostsFile \"${CA4_KNOWN_HOSTS}\""
    if [[ -n "${CA4_SSH_IDENTITY:-}" ]]; then
      printf '  IdentityFile "%s"\n  IdentitiesOnly yes\n' "${CA4_SSH_IDENTITY}"
    fi
  } >"${new_config}"
  if ! cmp -s "${new_config}" "${CA4_SSH_CONFIG}"; then
    install -m 600 "${new_config}" "${CA4_SSH_CONFIG}"
  fi
  rm -f "${new_config}"
  SSH_OPTS=(-F "${CA4_SSH_CONFIG}")
  SSH_JUMP="${user}@${bastion}"
}

# cluster_hosts: read the bastion, the SSH user and the K3s nodes from Terraform's outputs into
# bastion, SSH_USER, servers and agents, and write the ssh config for them (ssh_opts).
cluster_hosts() {
  tf_check_state
  bastion="$(tf_output bastion_public_ip)"
  SSH_USER="$(tf_output ssh_user)"
  read -r -a servers <<<"$(tf_output_list k3s_server_private_ips)"
  read -r -a agents <<<"$(tf_output_list k3s_agent_private_ips)"
  [[ -n "${bastion}" && ${#servers[@]} -gt 0 ]] || die "terraform outputs are empty: run 'make ca4-apply' first"
  ssh_opts "${bastion}" "${SSH_USER}" "${servers[@]}" "${agents[@]}"
}

# remote HOST COMMAND: run COMMAND on a private node through the bastion (the config's ProxyJump).
remote() {
  local host="$1"
  shift
  # shellcheck disable=SC2029 # the callers build the remote command line on purpose
  ssh "${SSH_OPTS[@]}" "${SSH_USER}@${host}" "$@"
}

# k3s_version HOST: the K3s version installed on HOST, empty when none; fails (naming HOST) when
# HOST cannot be asked: a node that does not answer is not a node without K3s.
k3s_version() {
  local version
  if ! version="$(remote "$1" 'k3s --version 2>/dev/null | head -n1 | cut -d" " -f3 || true')"; then
    echo "${0##*/}: cannot ask ${1} whether it runs K3s (ssh through the bastion failed, above);" \
      "fix that and run again: deciding without it could start a second cluster" >&2
    return 1
  fi
  printf '%s' "${version}"
}

# running_server: the first server (cluster_hosts' servers, in order) that runs K3s, empty when
# none does; fails when a server cannot be asked. Every server serves the Kubernetes API and can
# let a node join; after Terraform replaced a server (new instance, new IP, no K3s), the cluster
# lives on in the others.
running_server() {
  local host version
  for host in "${servers[@]}"; do
    version="$(k3s_version "${host}")" || return 1
    if [[ -n "${version}" ]]; then
      printf '%s' "${host}"
      return 0
    fi
  done
}
