#!/usr/bin/env bash
# Create the application's database user on DocumentDB: readWrite on the CA4 database only.
#   1. the master secret (Terraform's documentdb_secret_arn) is read from Secrets Manager into
#      this shell only: never a file, an argument or the cluster
#   2. the app user's secret, ca4/<ENV>/app-db-user, is read, or created once with a random password
#   3. through an SSH tunnel to DocumentDB via the bastion (closed on exit) and the RDS CA bundle,
#      `ca4 db-user` creates or corrects the user (both secrets on its stdin)
# Idempotent: a user that already has exactly that role and password is left alone.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

endpoint="$(tf_output documentdb_endpoint 2>/dev/null || true)"
if [[ -z "${endpoint}" || "${endpoint}" == null ]]; then
  log "no DocumentDB in ENV=${CA4_ENV} (documentdb_enabled = false): no database user to create"
  exit 0
fi
master_arn="$(tf_output documentdb_secret_arn)"
app_secret="${CA4_APP_DB_SECRET:-ca4/${CA4_ENV}/app-db-user}"

master="$(aws secretsmanager get-secret-value --secret-id "${master_arn}" --query SecretString --output text)"
if ! app="$(aws secretsmanager get-secret-value --secret-id "${app_secret}" --query SecretString --output text 2>/dev/null)"; then
  password="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  app="{\"username\":\"ca4app\",\"password\":\"${password}\"}"
  printf '%s' "${app}" | aws secretsmanager create-secret --name "${app_secret}" \
    --description "CA4 ${CA4_ENV}: the application's DocumentDB user (readWrite on ca4)" \
    --secret-string file:///dev/stdin >/dev/null
  log "created secret ${app_secret} with a new application password"
fi

bastion="$(tf_output bastion_public_ip)"
SSH_USER="$(tf_output ssh_user)"
ssh_opts "${bastion}" "${SSH_USER}"
mkdir -p "${CA4_STATE_DIR}"
bundle="${CA4_STATE_DIR}/rds-global-bundle.pem"
curl -sfL --proto '=https' -o "${bundle}" "${CA4_DB_CA_URL:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}" ||
  die "cannot fetch the RDS CA bundle"
port="${CA4_DB_TUNNEL_PORT:-27117}"
control="${CA4_STATE_DIR}/db-tunnel.sock"
ssh "${SSH_OPTS[@]}" -f -N -M -S "${control}" -o ExitOnForwardFailure=yes \
  -L "127.0.0.1:${port}:${endpoint}:27017" "${SSH_JUMP}"
trap 'ssh "${SSH_OPTS[@]}" -S "${control}" -O exit "${SSH_JUMP}" 2>/dev/null || true' EXIT

url="mongodb://127.0.0.1:${port}/?tls=true&tlsCAFile=${bundle}&tlsAllowInvalidHostnames=true&directConnection=true&retryWrites=false"
printf '%s\n%s\n' "${master}" "${app}" | uv run ca4 db-user --url "${url}" --database "${CA4_MONGO_DB:-ca4}"
