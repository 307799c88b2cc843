#!/usr/bin/env bash
# Create the application's database user on DocumentDB: readWrite on the CA4 database only.
#   1. the master secret (Terraform's documentdb_secret_arn) is read from Secrets Manager into
#      this shell only: never a file, an argument or the cluster
#   2. the app user's secret, ca4/<ENV>/app-db-user, is read, or created once with a random password
#      when Secrets Manager says it does not exist (any other error stops the script). Every aws
#      call names the stack's region (Terraform's aws_region), whatever the profile's default
#   3. through an SSH tunnel to DocumentDB via the first K3s server (closed on exit) and the RDS
#      CA bundle, `ca4 db-user` creates or corrects the user (both secrets on its stdin). The tunnel
#      ends on a K3s server, reached through the bastion (the ssh config's ProxyJump): DocumentDB
#      admits 27017 from the k3s_nodes security group only, and the bastion may reach nothing but
#      the nodes (infra/terraform/modules/security). Before `ca4 db-user` runs, the server must
#      reach the endpoint's port within CA4_DB_TUNNEL_TIMEOUT seconds (default 5), or the script
#      stops and says what to check, rather than letting the client hang on a dead forward.
# Idempotent: a user that already has exactly that role and password is left alone.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ENV's own state first: the lookup below swallows errors, and must not read another ENV's.
tf_check_state
endpoint="$(tf_output documentdb_endpoint 2>/dev/null || true)"
if [[ -z "${endpoint}" || "${endpoint}" == null ]]; then
  log "no DocumentDB in ENV=${CA4_ENV} (documentdb_enabled = false): no database user to create"
  exit 0
fi
master_arn="$(tf_output documentdb_secret_arn)"
region="$(tf_output aws_region)"
[[ -n "${region}" ]] || die "the Terraform output aws_region is empty: run 'make ca4-apply ENV=${CA4_ENV}'"
app_secret="${CA4_APP_DB_SECRET:-ca4/${CA4_ENV}/app-db-user}"

master="$(aws secretsmanager get-secret-value --region "${region}" --secret-id "${master_arn}" \
  --query SecretString --output text)"
# aws's error text (never a secret value) is kept apart from the secret on stdout.
errors="$(mktemp)"
if app="$(aws secretsmanager get-secret-value --region "${region}" --secret-id "${app_secret}" \
  --query SecretString --output text 2>"${errors}")"; then
  rm -f "${errors}"
elif grep -q ResourceNotFoundException "${errors}"; then
  rm -f "${errors}"
  password="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  app="{\"username\":\"ca4app\",\"password\":\"${password}\"}"
  printf '%s' "${app}" | aws secretsmanager create-secret --region "${region}" --name "${app_secret}" \
    --description "CA4 ${CA4_ENV}: the application's DocumentDB user (readWrite on ca4)" \
    --secret-string file:///dev/stdin >/dev/null
  log "created secret ${app_secret} in ${region} with a new application password"
else
  error="$(tr -s '\n' ' ' <"${errors}")"
  rm -f "${errors}"
  die "cannot read the secret ${app_secret} in ${region} (nothing created): ${error:-aws exited with an error}"
fi

# The tunnel's far end is the first K3s server (the ssh config routes it through the bastion).
cluster_hosts
via="${servers[0]}"
mkdir -p "${CA4_STATE_DIR}"
bundle="${CA4_STATE_DIR}/rds-global-bundle.pem"
curl -sfL --proto '=https' -o "${bundle}" "${CA4_DB_CA_URL:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}" ||
  die "cannot fetch the RDS CA bundle"
port="${CA4_DB_TUNNEL_PORT:-27117}"
timeout_s="${CA4_DB_TUNNEL_TIMEOUT:-5}"
[[ "${timeout_s}" =~ ^[1-9][0-9]*$ ]] || die "CA4_DB_TUNNEL_TIMEOUT=${timeout_s} is not a whole number of seconds"
control="${CA4_STATE_DIR}/db-tunnel.sock"
log "tunnel 127.0.0.1:${port} -> ${endpoint}:27017 through the K3s server ${via} (via the bastion ${bastion})"
ssh "${SSH_OPTS[@]}" -f -N -M -S "${control}" -o ExitOnForwardFailure=yes \
  -L "127.0.0.1:${port}:${endpoint}:27017" "${SSH_USER}@${via}" ||
  die "cannot open the tunnel 127.0.0.1:${port} -> ${endpoint}:27017 through the K3s server ${via}: check that 127.0.0.1:${port} is free (CA4_DB_TUNNEL_PORT picks another) and that 'ssh -F ${CA4_SSH_CONFIG} ${SSH_USER}@${via} true' works"
trap 'ssh "${SSH_OPTS[@]}" -S "${control}" -O exit "${SSH_USER}@${via}" 2>/dev/null || true' EXIT

# A local forward always accepts; only its far end tells whether DocumentDB answers. Ask the server
# the tunnel goes through to open a TCP connection to the endpoint (over the tunnel's own ssh
# connection), so that a security group, a cluster that is not available or a stale endpoint stops
# the script in seconds, by name, instead of as the client's server-selection timeout.
# shellcheck disable=SC2029 # endpoint and timeout are expanded here on purpose
if ! ssh "${SSH_OPTS[@]}" -S "${control}" "${SSH_USER}@${via}" \
  "timeout ${timeout_s} bash -c 'exec 3<>/dev/tcp/${endpoint}/27017'" </dev/null; then
  die "DocumentDB ${endpoint}:27017 does not answer TCP within ${timeout_s}s from the K3s server ${via}, which the tunnel 127.0.0.1:${port} goes through: check that the cluster is available (aws docdb describe-db-clusters), that its security group admits 27017 from the k3s_nodes security group and the nodes' egress reaches the VPC (infra/terraform/modules/security; make ca4-apply), and that documentdb_endpoint (terraform output) is this cluster's"
fi
log "DocumentDB ${endpoint}:27017 answers through the K3s server ${via}"

url="mongodb://127.0.0.1:${port}/?tls=true&tlsCAFile=${bundle}&tlsAllowInvalidHostnames=true&directConnection=true&retryWrites=false"
printf '%s\n%s\n' "${master}" "${app}" | uv run ca4 db-user --url "${url}" --database "${CA4_MONGO_DB:-ca4}"
