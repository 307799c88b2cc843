#!/usr/bin/env bash
# Shared helpers of the CA4 provisioning scripts. Source it; do not run it.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file

CA4_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CA4_ENV="${CA4_ENV:-dev}"
CA4_TF_DIR="${CA4_TF_DIR:-${CA4_REPO_ROOT}/infra/terraform/stacks/ca4}"
CA4_KUBECONFIG="${CA4_KUBECONFIG:-${HOME}/.kube/ca4-${CA4_ENV}.yaml}"
# K3s release pinned for every node; the Helm charts and the schema tests target the same minor.
CA4_K3S_VERSION="${CA4_K3S_VERSION:-v1.33.5+k3s1}"

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# tf_output NAME: one Terraform output as raw text.
tf_output() { terraform -chdir="${CA4_TF_DIR}" output -raw "$1"; }

# tf_output_list NAME: a list(string) output as whitespace-separated words.
tf_output_list() {
  terraform -chdir="${CA4_TF_DIR}" output -json "$1" | tr -d '[]" \n' | tr ',' ' '
}

# ssh_opts BASTION USER: fills the SSH_OPTS array. Host keys are pinned per environment in a
# dedicated known_hosts file (accept-new: first contact is trusted, a changed key is refused).
ssh_opts() {
  local bastion="$1" user="$2"
  mkdir -p "${HOME}/.ssh"
  SSH_OPTS=(
    -o BatchMode=yes
    -o ConnectTimeout=15
    -o StrictHostKeyChecking=accept-new
    -o "UserKnownHostsFile=${HOME}/.ssh/known_hosts.ca4-${CA4_ENV}"
    -o ServerAliveInterval=30
  )
  if [[ -n "${CA4_SSH_IDENTITY:-}" ]]; then
    SSH_OPTS+=(-i "${CA4_SSH_IDENTITY}")
  fi
  SSH_JUMP="${user}@${bastion}"
}

# remote HOST COMMAND: run COMMAND on a private node through the bastion (ProxyJump).
remote() {
  local host="$1"
  shift
  ssh "${SSH_OPTS[@]}" -J "${SSH_JUMP}" "${SSH_USER}@${host}" "$@"
}
