#!/usr/bin/env bash
# `make test`: install, start the dev stack unless the CA4_* endpoints are already set, then run
# ruff, mypy and pytest (non-disruptive tests first, then the deploy tier, then the ones that stop
# and start services).
# Stops only the services it started, on success, failure or Ctrl-C. Extra arguments go to pytest.
#
# Knobs: PYTEST_WORKERS=N runs each pytest pass with pytest-xdist (-n N); CA4_DEVSTACK_* (see
# `uv run ca4 devstack --help`) moves the dev stack's ports and folders.
set -euo pipefail
cd "$(dirname "$0")/.."

started_file=""
helm_pid=""
helm_log=""
failures=()

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_started() {
    local code=$?
    if [[ -n "$helm_pid" ]]; then
        kill -- "-$helm_pid" 2>/dev/null || true # its process group: uv, python and go install
    fi
    rm -f "$helm_log"
    if [[ -n "$started_file" ]]; then
        if [[ -s "$started_file" ]]; then
            log "Stopping the services this run started: $(tr '\n' ' ' <"$started_file")"
            uv run ca4 devstack down --services-file "$started_file" || true
        fi
        rm -f "$started_file"
    fi
    exit "$code"
}

step() {
    # Run one check, remember it if it fails, keep going so one run reports every problem.
    local name=$1
    shift
    log "$name"
    local began=$SECONDS
    if "$@"; then
        echo "ok: $name ($((SECONDS - began))s)"
    else
        echo "FAILED: $name ($((SECONDS - began))s)"
        failures+=("$name")
    fi
}

pytest_pass() {
    # Exit code 5 means "no tests collected", which is fine for the optional disruptive pass.
    local allow_empty=$1
    shift
    local code=0
    uv run pytest "$@" || code=$?
    if [[ $code -eq 5 && $allow_empty == yes ]]; then
        echo "(no tests selected)"
        return 0
    fi
    return "$code"
}

log "Installing the workspace"
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv || {
        echo "uv is not on PATH and pip could not install it: install uv" \
            "(curl -LsSf https://astral.sh/uv/install.sh | sh, or pipx install uv)" >&2
        exit 1
    }
fi
# Compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on CI machines), every Python
# process the tests start would otherwise compile its imports again (about 3.5 s for a worker).
uv sync --all-packages --frozen --compile-bytecode

# Every service and tool the tests reach is on loopback: a proxy in the environment (for the
# package registries) must not take those requests.
export NO_PROXY="${NO_PROXY:+$NO_PROXY,}127.0.0.1,localhost,::1" no_proxy="${no_proxy:+$no_proxy,}127.0.0.1,localhost,::1"

# The Helm versions the infra tests render with: built once into the cache (minutes on a new
# machine, more than a test may run), beside the dev stack's start.
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
helm_log=$(mktemp)
set -m # the build in a process group of its own, which the traps stop whole
uv run python -m tests.infra.helm_builds >"$helm_log" 2>&1 &
helm_pid=$!
set +m

if [[ -n "${CA4_KAFKA_BOOTSTRAP_SERVERS:-}" && -n "${CA4_MONGO_URL:-}" && -n "${CA4_S3_ENDPOINT_URL:-}" ]]; then
    log "Using the services named by CA4_KAFKA_BOOTSTRAP_SERVERS, CA4_MONGO_URL, CA4_S3_ENDPOINT_URL"
else
    log "Starting the dev stack"
    started_file=$(mktemp)
    began=$SECONDS
    uv run ca4 devstack up --started-file "$started_file"
    echo "dev stack ready in $((SECONDS - began))s"
    eval "$(uv run ca4 devstack env)"
fi

log "Helm for the infra tests"
helm_built=yes
wait "$helm_pid" || helm_built=no
helm_pid=""
cat "$helm_log"
rm -f "$helm_log"
[[ $helm_built == yes ]] || failures+=("helm for the infra tests")

xdist=()
if [[ -n "${PYTEST_WORKERS:-}" ]]; then
    xdist=(-n "$PYTEST_WORKERS")
fi

step "ruff check" uv run ruff check .
step "ruff format --check" uv run ruff format --check .
step "mypy (strict)" uv run mypy
# The SDK declares Python >= 3.10 (sdk/pyproject.toml): type-check it against 3.10's stdlib.
step "mypy (SDK on Python 3.10)" uv run mypy --python-version 3.10 -p ca4_sdk
step "pytest (not disruptive)" pytest_pass no -m "not disruptive and not deploy" ${xdist[@]+"${xdist[@]}"} "$@"
# The deploy tier (make test-deploy) starts its own Kafka quorum and app pods: one pass, no xdist.
step "pytest (deploy tier)" pytest_pass yes -m deploy "${@:-tests/deploy}"
# Disruptive tests stop and restart services, so they never share the stack with other tests.
step "pytest (disruptive)" pytest_pass yes -m disruptive "$@"

if ((${#failures[@]})); then
    log "FAILED: ${failures[*]}"
    exit 1
fi
log "All checks passed"
