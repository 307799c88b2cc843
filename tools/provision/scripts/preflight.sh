#!/usr/bin/env bash
# preflight.sh TARGET [tool...] [-- requirement...]
# Checks a Make target's preconditions before it changes anything, and names the first missing one
# in a single line. A requirement is one of:
#   VAR            the environment variable VAR is set and not empty
#   file:VAR       VAR is set and names a readable file
#   files:VAR      every word of VAR (space-separated; VAR may be unset or empty) is a readable file
#   aws            AWS credentials: AWS_PROFILE, or AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY
set -euo pipefail

if [[ "${1:-}" == --help || "${1:-}" == -h ]]; then
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit 0
fi
target="${1:?usage: preflight.sh TARGET [tool...] [-- requirement...]}"
shift
fail() { printf '%s: %s\n' "${target}" "$*" >&2; exit 1; }

# The provisioning scripts use bash 4.4 (mapfile, associative arrays, negative array indexes,
# empty arrays under set -u); macOS's /bin/bash is 3.2. This runs with the bash first on PATH,
# which is the one the scripts and the Make recipes get. The developer targets (dev-api,
# dev-ngrok) run none of those scripts, so macOS's own bash still runs them.
case "${target}" in
  dev-api | dev-ngrok) needs_bash_4=no ;;
  *) needs_bash_4=yes ;;
esac
if [[ "${needs_bash_4}" == yes ]] && ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  fail "bash ${BASH_VERSION} is too old: the provisioning scripts need bash 4.4 or later first on PATH (macOS: brew install bash, and put Homebrew's bin, /opt/homebrew/bin or /usr/local/bin, before /bin)"
fi

while [[ $# -gt 0 && "$1" != "--" ]]; do
  command -v "$1" >/dev/null 2>&1 || fail "missing tool: $1 (install it and put it on PATH; see docs/provisioning.md)"
  shift
done
[[ $# -gt 0 ]] && shift

for req in "$@"; do
  case "${req}" in
    aws)
      if [[ -z "${AWS_PROFILE:-}" && (-z "${AWS_ACCESS_KEY_ID:-}" || -z "${AWS_SECRET_ACCESS_KEY:-}") ]]; then
        fail "missing credential: AWS (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
      fi
      ;;
    file:*)
      var="${req#file:}"
      [[ -n "${!var:-}" ]] || fail "missing setting: ${var} (path of a file)"
      [[ -r "${!var}" ]] || fail "missing file: ${var}=${!var} does not exist or is unreadable"
      ;;
    files:*)
      var="${req#files:}"
      read -r -a files <<<"${!var:-}"
      for file in "${files[@]}"; do
        [[ -f "${file}" && -r "${file}" ]] ||
          fail "missing file: ${var} names ${file}, which does not exist or is unreadable"
      done
      ;;
    *)
      [[ -n "${!req:-}" ]] || fail "missing setting: ${req} (environment variable; see docs/provisioning.md)"
      ;;
  esac
done
