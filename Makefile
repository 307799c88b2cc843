# CA4 developer commands. `make help` lists them; each target's `##` comment is its help line.
# Other makefiles add targets in mk/*.mk (included at the end), using the same `##` convention.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

UV ?= uv
CA4 := $(UV) run ca4
PROCESSOR_URL ?= http://127.0.0.1:$${CA4_DEVSTACK_PROCESSOR_PORT:-8000}
WORKER_URL ?= http://127.0.0.1:$${CA4_DEVSTACK_WORKER_PORT:-8001}
EDGE_URL ?= http://127.0.0.1:$${CA4_DEVSTACK_EDGE_PORT:-8002}
PROMETHEUS_URL ?= http://127.0.0.1:$${CA4_DEVSTACK_PROMETHEUS_PORT:-9090}
# Where the SDK wheel is built and where the processor serves it from (its CA4_SDK_WHEEL_DIR).
export CA4_SDK_WHEEL_DIR ?= dist/sdk

.PHONY: help
help: ## Show this list of targets
	@if [ -t 1 ]; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} \
		/^[a-zA-Z0-9_.-]+:.*## / {printf "  %s%-22s%s %s\n", on, $$1, off, $$2}' \
		$(MAKEFILE_LIST) | sort -u
	@# Targets whose help line starts with "N." are the numbered steps of a deploy: list them in order.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## [0-9]+\. / {split($$2, n, "."); print n[1], $$1}' \
		$(MAKEFILE_LIST) | sort -n -u | \
		awk 'NR == 1 {print "\nDeploy to AWS in this order (docs/provisioning.md, ENV=dev|prod):"} \
			{printf "  %s. make %s\n", $$1, $$2}'

.PHONY: install
install: ## Install the workspace (uv sync, frozen lock file)
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv || { echo "uv is not on PATH and pip could not install it: install uv (curl -LsSf https://astral.sh/uv/install.sh | sh, or pipx install uv)" >&2; exit 1; }
	$(UV) sync --all-packages --frozen --compile-bytecode

.PHONY: sdk-wheel
sdk-wheel: ## Build the SDK wheel the processor serves at /sdk/ (into CA4_SDK_WHEEL_DIR, default dist/sdk)
	@mkdir -p $(CA4_SDK_WHEEL_DIR) && rm -f $(CA4_SDK_WHEEL_DIR)/ca4_sdk-*.whl
	$(UV) build --package ca4-sdk --wheel --quiet -o $(CA4_SDK_WHEEL_DIR)

.PHONY: dev
dev: install sdk-wheel ## Start the dev stack plus processor, worker and the edge (127.0.0.1:8002), send a demo report, say where to look
	$(CA4) devstack up --with-app
	@if $(CA4) send --help >/dev/null 2>&1; then \
		$(CA4) send --count 1 --sessions 1; \
	else \
		echo "(no demo report: \`ca4 send\` does not exist yet)"; \
	fi
	@echo
	@echo "CA4 is running:"
	@echo "  edge (notebooks)  $(EDGE_URL)   (the one URL for notebooks and the SDK: ingest, /sdk/ and reads; make dev-ngrok for Colab)"
	@echo "  SDK for notebooks $(EDGE_URL)/sdk/   (pip install --force-reinstall --no-deps --index-url $(EDGE_URL)/sdk/ ca4-sdk)"
	@echo "  stored sessions   $(EDGE_URL)/v1/sessions   (read API through the edge: curl -H 'Authorization: Bearer ca4-dev-key' ...)"
	@echo "  SDK settings      export CA4_EDGE_API_URL=$(EDGE_URL) CA4_API_KEY=ca4-dev-key"
	@echo "  API docs          $(PROCESSOR_URL)/docs   (the processor's own port: ingest only, not for notebooks)"
	@echo "  processor metrics $(PROCESSOR_URL)/metrics"
	@echo "  worker metrics    $(WORKER_URL)/metrics"
	@echo "  Prometheus        $(PROMETHEUS_URL)/classic/targets   (Debian's build: the classic UI)"
	@echo "  status / logs     uv run ca4 devstack status | uv run ca4 devstack logs SERVICE"
	@echo "  stop everything   make devstack-down"

.PHONY: test
test: ## Install, start the dev stack if needed, run ruff, mypy and pytest, stop what was started
	./scripts/test.sh

.PHONY: test-deploy
test-deploy: ## Deploy tier: render both Helm charts, run their pods here as processes (root; uses the dev stack's FerretDB and MinIO)
	@if [ -z "$${CA4_MONGO_URL:-}" ]; then eval "$$($(CA4) devstack env)"; fi; \
		$(UV) run pytest -m deploy tests/deploy

.PHONY: lint
lint: ## ruff check, ruff format --check, mypy (strict), shellcheck when installed
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run mypy --python-version 3.10 -p ca4_sdk  # the SDK runs on 3.10 (requires-python)
	@if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh .ci/run; \
	else echo "(shellcheck not installed: skipped)"; fi

.PHONY: format
format: ## Apply ruff's fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

.PHONY: bench
bench: ## Run the benchmarks in bench/ (python -m bench)
	@if [ -f bench/__main__.py ]; then \
		$(UV) run python -m bench; \
	else \
		echo "bench/ has no __main__.py yet: nothing to run"; \
	fi

.PHONY: devstack-up
devstack-up: ## Start Kafka, PostgreSQL + FerretDB v2, MinIO, Prometheus and Alertmanager (installs pinned versions once)
	$(CA4) devstack up

.PHONY: devstack-down
devstack-down: ## Stop every dev stack process this checkout started (apps included)
	$(CA4) devstack down

.PHONY: devstack-status
devstack-status: ## Show each dev stack service, its address, PID and health
	$(CA4) devstack status

-include mk/*.mk
