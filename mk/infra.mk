# CA4 infrastructure targets: the provisioning guide (docs/provisioning.md) as Make targets.
# Included by the root Makefile (`-include mk/*.mk`); also runs alone: make -f mk/infra.mk TARGET.
# Every target checks its preconditions first (tools/provision/scripts/preflight.sh) and names the
# missing tool or credential in one line. ENV=dev|prod picks the tfvars and Helm values.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

ENV ?= dev
CA4_INFRA_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
CA4_SCRIPTS := $(CA4_INFRA_ROOT)/tools/provision/scripts
CA4_PREFLIGHT := $(CA4_SCRIPTS)/preflight.sh
CA4_TF_DIR := $(CA4_INFRA_ROOT)/infra/terraform/stacks/ca4
CA4_TFVARS := $(CA4_INFRA_ROOT)/infra/terraform/envs/$(ENV).tfvars
# The operator's own Terraform variable files (space-separated paths; preflight checks each
# exists), passed after the shipped envs/<ENV>.tfvars so they override it: a grown disk, another
# region, in an untracked file (e.g. .ca4/<ENV>/site.tfvars), so ca4-images still builds.
CA4_TF_VAR_FILES ?=
CA4_TF_VAR_ARGS = -var-file=$(CA4_TFVARS) $(foreach file,$(CA4_TF_VAR_FILES),-var-file='$(abspath $(file))')
CA4_TFPLAN := ca4-$(ENV).tfplan
CA4_HELM_DIR := $(CA4_INFRA_ROOT)/infra/helm
CA4_AWS_REGION ?= eu-west-1
CA4_KUBECONFIG ?= $(HOME)/.kube/ca4-$(ENV).yaml
CA4_APP_NAMESPACE ?= app
CA4_PLATFORM_NAMESPACE ?= platform
# The ca4-platform chart creates this namespace (namespaces.monitoring); the receivers Secret lives in it.
CA4_MONITORING_NAMESPACE ?= monitoring
CA4_PLATFORM_RELEASE := ca4-platform
# Kubernetes version of `helm template` (offline renders default to 1.20, which the charts refuse):
# the K3s release tools/provision/scripts/lib.sh installs (CA4_K3S_VERSION).
CA4_KUBE_VERSION ?= 1.33.5
# The email receiver's addresses and SMTP server (values-prod.yaml leaves them empty and the chart
# refuses empty or example.org ones while the receiver is on): alertmanager.receivers.email.<key>
# from the variable named, passed only when it is set.
CA4_ALERT_EMAIL_SETTINGS := to=CA4_ALERT_EMAIL_TO from=CA4_ALERT_EMAIL_FROM smarthost=CA4_ALERT_SMTP_SMARTHOST \
	authUsername=CA4_ALERT_SMTP_USERNAME
# Commas are escaped for --set-string, so CA4_ALERT_EMAIL_TO may list several addresses.
CA4_COMMA := ,
CA4_ALERT_EMAIL_ARGS = $(foreach pair,$(CA4_ALERT_EMAIL_SETTINGS),$(if $($(lastword $(subst =, ,$(pair)))),\
	--set-string alertmanager.receivers.email.$(firstword $(subst =, ,$(pair)))='$(subst $(CA4_COMMA),\$(CA4_COMMA),$($(lastword $(subst =, ,$(pair)))))'))
# The operator's own values files (space-separated paths; preflight checks each exists), passed
# after the shipped values-<ENV>.yaml so they override it: site settings such as
# processor.extraEnv live in an untracked file (e.g. under .ca4/<ENV>/), not in a chart edit.
CA4_APP_VALUES ?=
CA4_PLATFORM_VALUES ?=
CA4_VALUES_ARGS = $(foreach file,$(1),-f '$(file)')
# The Kafka tunnel's local port (tunnel.sh kafka): the brokers advertise it, so a client sent
# from broker to broker stays in this ENV's tunnel. Set it for ca4-platform-setup too.
CA4_KAFKA_TUNNEL_PORT ?=
CA4_PLATFORM_HELM_ARGS = $(CA4_PLATFORM_RELEASE) $(CA4_HELM_DIR)/ca4-platform --namespace $(CA4_PLATFORM_NAMESPACE) \
	-f $(CA4_HELM_DIR)/ca4-platform/values-$(ENV).yaml $(call CA4_VALUES_ARGS,$(CA4_PLATFORM_VALUES)) $(CA4_ALERT_EMAIL_ARGS) \
	$(if $(CA4_KAFKA_TUNNEL_PORT),--set kafka.tunnel.advertisedBasePort=$(CA4_KAFKA_TUNNEL_PORT))
CA4_HELM_TIMEOUT ?= 10m
# The tag `make ca4-images` built and shipped (the git commit); CA4_IMAGE_TAG overrides it.
CA4_STATE_DIR ?= $(CA4_INFRA_ROOT)/.ca4/$(ENV)
CA4_IMAGE_TAG ?= $(shell cat '$(CA4_STATE_DIR)/image-tag' 2>/dev/null)
# Each ENV's own Terraform data dir (TF_DATA_DIR: the backend it was initialised with, providers),
# so dev and prod in one checkout never share a .terraform; absolute, as terraform -chdir needs.
CA4_TF_DATA_DIR := $(abspath $(CA4_STATE_DIR))/terraform
# Every Terraform output a target reads goes through this: it refuses a data dir that was never
# initialised for ENV or that holds another ENV's state (lib.sh tf_check_state).
CA4_TF_OUTPUT := $(CA4_SCRIPTS)/tf-output.sh
DESTROY_ARCHIVE ?= no
# The Alertmanager receivers' secrets: each key of the Secret the chart mounts, and the variable
# naming the file it is read from (never a value on a command line, never a Helm value).
CA4_ALERT_SECRET_FILES := webhook-url=CA4_ALERT_WEBHOOK_URL_FILE slack-api-url=CA4_ALERT_SLACK_API_URL_FILE \
	smtp-password=CA4_ALERT_SMTP_PASSWORD_FILE heartbeat-url=CA4_ALERT_HEARTBEAT_URL_FILE
# The in-cluster MongoDB of ENV=dev (ca4-platform mongodb.enabled): the Secret holding its app URL,
# and the command printing that URL (nothing when the Secret or its key is missing; the template
# never makes kubectl dump the Secret, as a failing one would).
CA4_DEV_MONGO_SECRET := $(CA4_PLATFORM_RELEASE)-mongodb
CA4_DEV_MONGO_URL = kubectl -n $(CA4_PLATFORM_NAMESPACE) get secret $(CA4_DEV_MONGO_SECRET) --ignore-not-found \
	-o go-template='{{with .data}}{{with index . "mongo-url"}}{{base64decode .}}{{end}}{{end}}'
# DocumentDB's CA bundle and the ConfigMap/key the ca4-app chart mounts it from (config.mongo.caBundle).
CA4_DB_CA_URL ?= https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
CA4_DB_CA_CONFIGMAP := ca4-db-ca-bundle
CA4_DB_CA_KEY := global-bundle.pem
# Where the chart mounts that key (config.mongo.caBundle.mountDir): a prod CA4_MONGO_URL must name
# tlsCAFile=$(CA4_DB_CA_FILE). Set it too if your CA4_APP_VALUES moves the mount.
CA4_DB_CA_MOUNT_DIR ?= /etc/ca4/db-ca
CA4_DB_CA_FILE = $(CA4_DB_CA_MOUNT_DIR)/$(CA4_DB_CA_KEY)
# The app Secret (mongo-url, api-key-hashes; the chart's secrets.existingSecret), and the command
# printing one of its keys from the cluster (nothing when the Secret or the key is missing).
CA4_APP_SECRET := ca4-app-secrets
CA4_APP_SECRET_VALUE = kubectl -n $(CA4_APP_NAMESPACE) get secret $(CA4_APP_SECRET) --ignore-not-found \
	-o go-template='{{with .data}}{{with index . "$(1)"}}{{base64decode .}}{{end}}{{end}}'
# The app Secret's keys the pods read at start (env CA4_MONGO_URL, a secretKeyRef): ca4-deploy-app
# passes their SHA-256, read from the live Secret, as secrets.existingSecretChecksum (the pods'
# checksum/secret annotation), so a new database URL rolls the pods. Not api-key-hashes: the pods
# mount it as a file and reload it live, so a key change needs no restart.
CA4_APP_SECRET_ENV_KEYS := mongo-url
# The SHA-256 of those keys as the live Secret holds them (the values stay in the pipe; a failing
# kubectl fails it, under pipefail, rather than giving the checksum of nothing).
CA4_APP_SECRET_CHECKSUM = { $(foreach key,$(CA4_APP_SECRET_ENV_KEYS),printf '%s=' '$(key)' && \
	$(call CA4_APP_SECRET_VALUE,$(key)) && printf '\n' &&) true; } | sha256sum | cut -d' ' -f1
# CA4_REVOKE_KEYS=yes lets ca4-deploy-app apply a CA4_API_KEY_HASHES without key ids the live
# Secret holds (revoking them); otherwise it refuses and names them.
CA4_REVOKE_KEYS ?=
# CA4_ALLOW_REPLACE=yes lets ca4-apply apply a plan that deletes or replaces a node, a disk, the
# database, the archive bucket or the KMS key (check-tf-plan.py); otherwise it refuses, naming them.
CA4_ALLOW_REPLACE ?=
# The API's public DNS name (ingress.host): required in prod, where it is a CNAME to the NLB
# (terraform output ingress_dns_name) and the name the certificate in the Secret ca4-api-tls holds.
CA4_INGRESS_HOST ?=

CA4_INFRA_TARGETS := ca4-tf-init ca4-apply ca4-bootstrap-k3s ca4-images ca4-db-user ca4-api-tunnel ca4-platform-setup \
	ca4-deploy-app ca4-verify-e2e ca4-destroy dev-kafka-tunnel
# Exported to these targets only, so the root Makefile's other targets see no change.
$(CA4_INFRA_TARGETS): export CA4_ENV := $(ENV)
# GNU Make 3.81 (macOS's /usr/bin/make) ignores .SHELLFLAGS: these targets' recipes would run
# without -e and pipefail, so a step that fails (a refused check) would not stop the next one
# (applying a Secret). Only they are refused: the root Makefile's own targets (make dev) still run.
ifneq ($(filter 3.7% 3.80% 3.81%,$(MAKE_VERSION)),)
ifneq ($(filter $(CA4_INFRA_TARGETS),$(MAKECMDGOALS)),)
$(error GNU Make $(MAKE_VERSION) ignores .SHELLFLAGS (-eu -o pipefail): a failed step would not stop these targets. Use GNU Make 3.82 or later (macOS: brew install make, then run gmake instead of make; see docs/provisioning.md, "What you need"))
endif
endif
$(CA4_INFRA_TARGETS): export CA4_TF_DIR := $(CA4_TF_DIR)
$(CA4_INFRA_TARGETS): export CA4_KUBECONFIG := $(CA4_KUBECONFIG)
$(CA4_INFRA_TARGETS): export CA4_STATE_DIR := $(CA4_STATE_DIR)
$(CA4_INFRA_TARGETS): export KUBECONFIG := $(CA4_KUBECONFIG)
$(CA4_INFRA_TARGETS): export TF_DATA_DIR := $(CA4_TF_DATA_DIR)

# Terraform needs the operator CIDR and SSH public key for every plan, apply and destroy.
CA4_TF_ENV = TF_VAR_operator_cidrs='["$(CA4_OPERATOR_CIDR)"]' TF_VAR_ssh_public_key="$$(cat '$(CA4_SSH_PUBLIC_KEY_FILE)')"
CA4_TF_PREFLIGHT = $(CA4_PREFLIGHT) $@ terraform $(1) -- aws CA4_TF_STATE_BUCKET CA4_OPERATOR_CIDR file:CA4_SSH_PUBLIC_KEY_FILE files:CA4_TF_VAR_FILES
CA4_KUBE_PREFLIGHT = $(CA4_PREFLIGHT) $@ $(1) -- file:CA4_KUBECONFIG $(2) && \
	{ kubectl version --request-timeout=5s >/dev/null 2>&1 || \
	  { echo "$@: Kubernetes API not reachable through $(CA4_KUBECONFIG): run 'make ca4-api-tunnel'" >&2; exit 1; }; }

.PHONY: ca4-tf-init
ca4-tf-init: ## Point Terraform at ENV's remote state (ca4-apply and ca4-destroy run it; alone: once per ENV and machine)
	@$(CA4_TF_PREFLIGHT)
	terraform -chdir=$(CA4_TF_DIR) init -input=false -reconfigure \
		-backend-config="bucket=$(CA4_TF_STATE_BUCKET)" \
		-backend-config="key=ca4/$(ENV)/terraform.tfstate" \
		-backend-config="region=$(CA4_AWS_REGION)"

.PHONY: ca4-apply
ca4-apply: ## 1. Terraform: VPC, bastion, K3s nodes, archive bucket, DocumentDB (ENV=dev|prod)
	@$(call CA4_TF_PREFLIGHT,uv)
	@$(MAKE) -f $(firstword $(MAKEFILE_LIST)) ca4-tf-init
	$(CA4_TF_ENV) terraform -chdir=$(CA4_TF_DIR) plan -input=false $(CA4_TF_VAR_ARGS) -out=$(CA4_TFPLAN)
	@# The saved plan is applied without a prompt: first refuse one that deletes or replaces what
	@# holds data or runs the cluster (tools/provision/scripts/check-tf-plan.py lists the types),
	@# unless CA4_ALLOW_REPLACE=yes. A refused plan is removed, so it cannot be applied by hand.
	@terraform -chdir=$(CA4_TF_DIR) show -json $(CA4_TFPLAN) | \
		uv run python $(CA4_SCRIPTS)/check-tf-plan.py --target $@ \
		$(if $(filter yes,$(CA4_ALLOW_REPLACE)),--allow-replace) || \
		{ rm -f $(CA4_TF_DIR)/$(CA4_TFPLAN); exit 1; }
	terraform -chdir=$(CA4_TF_DIR) apply -input=false $(CA4_TFPLAN)
	@rm -f $(CA4_TF_DIR)/$(CA4_TFPLAN)

.PHONY: ca4-bootstrap-k3s
ca4-bootstrap-k3s: ## 2. Install K3s on the nodes through the bastion, fetch the kubeconfig, wait for Ready
	@$(CA4_PREFLIGHT) $@ terraform ssh sha256sum
	$(CA4_SCRIPTS)/k3s-bootstrap.sh

.PHONY: ca4-images
ca4-images: ## 3. Build the processor and worker images (tag = git commit) and import them on every node
	@$(CA4_PREFLIGHT) $@ terraform ssh git
	$(CA4_SCRIPTS)/images.sh

.PHONY: ca4-db-user
ca4-db-user: ## 4. DocumentDB (prod; dev has none: nothing to do): the app's user, readWrite on the CA4 database only
	@$(CA4_PREFLIGHT) $@ terraform ssh curl uv -- aws
	CA4_DB_CA_URL='$(CA4_DB_CA_URL)' $(CA4_SCRIPTS)/db-user.sh

.PHONY: ca4-api-tunnel
ca4-api-tunnel: ## 5. Open the Kubernetes API tunnel (localhost:6443) through the bastion; kubectl and helm need it
	@$(CA4_PREFLIGHT) $@ terraform ssh
	$(CA4_SCRIPTS)/tunnel.sh api

.PHONY: helm-sync
helm-sync: ## Copy observability/ configs and dashboards into the ca4-platform chart
	$(CA4_SCRIPTS)/helm-sync.sh

.PHONY: ca4-platform-setup
ca4-platform-setup: ## 6. Helm: namespaces, Kafka, Prometheus, Alertmanager (+ its receivers Secret), Loki, Alloy, Grafana; MongoDB in dev
	@$(call CA4_KUBE_PREFLIGHT,helm kubectl,files:CA4_PLATFORM_VALUES)
	$(CA4_SCRIPTS)/helm-sync.sh --check
	@# The Alertmanager receivers ENV's values switch on, read from the chart as it renders: the
	@# Secret it mounts and the keys its config reads. Every key comes from the file its
	@# CA4_ALERT_*_FILE names (the Secret is then written whole), or else from the Secret already in
	@# the cluster; when neither has it, stop here in one line, before anything changes, rather than
	@# in Helm's --wait. Then make the monitoring namespace (which the chart creates) adoptable by
	@# the release, so the Secret can exist before the first install. No secret is ever echoed.
	@rendered="$$(helm template $(CA4_PLATFORM_HELM_ARGS) --kube-version $(CA4_KUBE_VERSION))"; \
	secret="$$(awk '/name: receiver-secrets$$/ {f = 1} f && /secretName:/ {print $$2; exit}' <<<"$$rendered")"; \
	keys="$$(grep -o '/etc/alertmanager/secrets/[a-z-]*' <<<"$$rendered" | sed 's,.*/,,' | sort -u || true)"; \
	from_files=(); unset_vars=(); missing=(); \
	for key in $$keys; do \
		var=""; for pair in $(CA4_ALERT_SECRET_FILES); do [[ "$${pair%%=*}" != "$$key" ]] || var="$${pair#*=}"; done; \
		[[ -n "$$var" ]] || { echo "$@: Alertmanager reads the Secret key $$key, which no CA4_ALERT_*_FILE provides" >&2; exit 1; }; \
		if [[ -z "$${!var:-}" ]]; then unset_vars+=("$$var"); continue; fi; \
		[[ -r "$${!var}" && -s "$${!var}" ]] || \
			{ echo "$@: missing file: $$var=$${!var} does not exist, is unreadable or is empty" >&2; exit 1; }; \
		from_files+=("--from-file=$$key=$${!var}"); \
	done; \
	where="$(CA4_MONITORING_NAMESPACE)/$$secret"; \
	if [[ $${#unset_vars[@]} -gt 0 && $${#from_files[@]} -gt 0 ]]; then \
		echo "$@: missing setting: $${unset_vars[*]} (the receivers Secret $$where is written whole: name a file for every enabled receiver)" >&2; exit 1; \
	fi; \
	if [[ $${#unset_vars[@]} -gt 0 ]]; then \
		live="$$(kubectl -n $(CA4_MONITORING_NAMESPACE) get secret "$$secret" --ignore-not-found \
			-o go-template='{{.metadata.name}}{{"\n"}}{{range $$k, $$v := .data}}{{$$k}}{{"\n"}}{{end}}')"; \
		for var in "$${unset_vars[@]}"; do \
			for pair in $(CA4_ALERT_SECRET_FILES); do \
				[[ "$${pair#*=}" != "$$var" ]] || grep -qxF -- "$${pair%%=*}" <<<"$$live" || missing+=("$$var"); \
			done; \
		done; \
		if [[ $${#missing[@]} -gt 0 ]]; then \
			state="$$( [[ -n "$$live" ]] && echo "lacks their keys" || echo "does not exist")"; \
			echo "$@: missing setting: $${missing[*]} (files with the enabled Alertmanager receivers' secrets: the Secret $$where $$state)" >&2; \
			exit 1; \
		fi; \
	fi; \
	kubectl create namespace $(CA4_MONITORING_NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -; \
	kubectl label --overwrite namespace $(CA4_MONITORING_NAMESPACE) app.kubernetes.io/managed-by=Helm; \
	kubectl annotate --overwrite namespace $(CA4_MONITORING_NAMESPACE) \
		meta.helm.sh/release-name=$(CA4_PLATFORM_RELEASE) meta.helm.sh/release-namespace=$(CA4_PLATFORM_NAMESPACE); \
	if [[ $${#from_files[@]} -gt 0 ]]; then \
		kubectl -n $(CA4_MONITORING_NAMESPACE) create secret generic "$$secret" "$${from_files[@]}" \
			--dry-run=client -o yaml | kubectl apply -f -; \
	elif [[ -n "$$keys" ]]; then \
		echo "$@: Alertmanager receivers: using the existing Secret $$where"; \
	fi
	kubectl create namespace $(CA4_PLATFORM_NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -
	kubectl label --overwrite namespace $(CA4_PLATFORM_NAMESPACE) \
		pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
	helm upgrade --install $(CA4_PLATFORM_HELM_ARGS) --wait --timeout $(CA4_HELM_TIMEOUT)

.PHONY: ca4-deploy-app
ca4-deploy-app: ## 7. Helm: processor and worker, with the app Secret (CA4_API_KEY_HASHES, CA4_MONGO_URL: the live Secret's when unset, in dev else the in-cluster MongoDB's; CA4_INGRESS_HOST in prod)
	@$(call CA4_KUBE_PREFLIGHT,helm kubectl terraform curl uv sha256sum,files:CA4_APP_VALUES)
	@# Each of the Secret's values comes from its variable, else from the live Secret (a re-run
	@# keeps what the cluster has), else, for the dev database URL, from the in-cluster MongoDB
	@# (ca4-platform values-dev.yaml: mongodb.enabled). Read into the shell, never echoed.
	@[[ -n "$${CA4_API_KEY_HASHES:-}" || -n "$$($(call CA4_APP_SECRET_VALUE,api-key-hashes))" ]] || { echo "$@: missing setting: CA4_API_KEY_HASHES (the API keys file: key_id:sha256hex[:tenant[:scopes]] entries; no live Secret $(CA4_APP_NAMESPACE)/$(CA4_APP_SECRET) holds any to keep)" >&2; exit 1; }
	@[[ -n "$${CA4_MONGO_URL:-}" || -n "$$($(call CA4_APP_SECRET_VALUE,mongo-url))" ]] || \
		[[ "$(ENV)" == dev && -n "$$($(CA4_DEV_MONGO_URL))" ]] || { \
		if [[ "$(ENV)" == dev ]]; then \
			echo "$@: missing setting: CA4_MONGO_URL (ENV=dev: no in-cluster MongoDB URL in the Secret $(CA4_PLATFORM_NAMESPACE)/$(CA4_DEV_MONGO_SECRET): run 'make ca4-platform-setup' first, or set CA4_MONGO_URL)" >&2; \
		else \
			echo "$@: missing setting: CA4_MONGO_URL (ENV=$(ENV): the app user's DocumentDB URL, see docs/provisioning.md; no live Secret $(CA4_APP_NAMESPACE)/$(CA4_APP_SECRET) holds one to keep)" >&2; \
		fi; exit 1; }
	@[[ -n "$(CA4_IMAGE_TAG)" ]] || { echo "$@: no image tag: run 'make ca4-images' (or set CA4_IMAGE_TAG)" >&2; exit 1; }
	@[[ "$(ENV)" != prod || -n "$(CA4_INGRESS_HOST)" ]] || { echo "$@: missing setting: CA4_INGRESS_HOST (ENV=prod: the API's public DNS name, e.g. api.ca4.<your domain>, a CNAME to 'terraform output ingress_dns_name' whose certificate is in the Secret $(CA4_APP_NAMESPACE)/ca4-api-tls; see docs/provisioning.md, \"The public edge\")" >&2; exit 1; }
	@$(CA4_TF_OUTPUT) --check
	@# The Secret is applied outside Helm so that its values never enter the release history,
	@# and only once tools/provision/scripts/check-app-secrets.py accepts it: keys the services'
	@# own parser takes, no live key id dropped unless CA4_REVOKE_KEYS=yes (the pods reload the
	@# keys file live, so a dropped id is revoked even if Helm then fails), and a database URL the
	@# services can use (prod: TLS with the mounted CA bundle). Otherwise the pods would exit at
	@# start and `helm --wait` time out, the reason only in their logs.
	@secret_dir="$$(mktemp -d)"; trap 'rm -rf "$$secret_dir"' EXIT; \
	live="$$secret_dir/live"; new="$$secret_dir/new"; mkdir "$$live" "$$new"; \
	$(call CA4_APP_SECRET_VALUE,api-key-hashes) > "$$live/api-key-hashes"; \
	$(call CA4_APP_SECRET_VALUE,mongo-url) > "$$live/mongo-url"; \
	if [[ -n "$${CA4_API_KEY_HASHES:-}" ]]; then \
		printf '%s' "$$CA4_API_KEY_HASHES" > "$$new/api-key-hashes"; \
	else \
		cp "$$live/api-key-hashes" "$$new/api-key-hashes"; \
		echo "$@: CA4_API_KEY_HASHES unset: keeping the keys of the live Secret $(CA4_APP_NAMESPACE)/$(CA4_APP_SECRET)"; \
	fi; \
	if [[ -n "$${CA4_MONGO_URL:-}" ]]; then \
		printf '%s' "$$CA4_MONGO_URL" > "$$new/mongo-url"; \
	elif [[ -s "$$live/mongo-url" ]]; then \
		cp "$$live/mongo-url" "$$new/mongo-url"; \
		in_cluster="$$( [[ "$(ENV)" != dev ]] || $(CA4_DEV_MONGO_URL))"; \
		without_password() { sed 's#^\([a-z+]*://[^:@/]*\):[^@]*@#\1@#'; }; \
		if [[ -n "$$in_cluster" && "$$in_cluster" != "$$(<"$$live/mongo-url")" && \
			"$$(without_password <<<"$$in_cluster")" == "$$(without_password <"$$live/mongo-url")" ]]; then \
			printf '%s' "$$in_cluster" > "$$new/mongo-url"; \
			echo "$@: CA4_MONGO_URL unset: the in-cluster MongoDB's credentials changed (its Secret $(CA4_PLATFORM_NAMESPACE)/$(CA4_DEV_MONGO_SECRET) was made again): taking its URL"; \
		else \
			echo "$@: CA4_MONGO_URL unset: keeping the database URL of the live Secret $(CA4_APP_NAMESPACE)/$(CA4_APP_SECRET)"; \
		fi; \
	else \
		$(CA4_DEV_MONGO_URL) > "$$new/mongo-url"; \
		[[ -s "$$new/mongo-url" ]] || { echo "$@: the Secret $(CA4_PLATFORM_NAMESPACE)/$(CA4_DEV_MONGO_SECRET) is gone" >&2; exit 1; }; \
		echo "$@: CA4_MONGO_URL: the in-cluster MongoDB's (Secret $(CA4_PLATFORM_NAMESPACE)/$(CA4_DEV_MONGO_SECRET), key mongo-url)"; \
	fi; \
	uv run python $(CA4_SCRIPTS)/check-app-secrets.py --target $@ --env $(ENV) --new "$$new" --live "$$live" \
		--ca-file '$(CA4_DB_CA_FILE)' $(if $(filter yes,$(CA4_REVOKE_KEYS)),--revoke-keys) || exit 1; \
	kubectl -n $(CA4_APP_NAMESPACE) create secret generic $(CA4_APP_SECRET) --from-file="$$new" \
		--dry-run=client -o yaml | kubectl apply -f -
	@# The RDS CA bundle, fetched now so it is current, in the ConfigMap the chart mounts at
	@# config.mongo.caBundle (public certificates: a ConfigMap, not a Secret).
	ca_dir="$$(mktemp -d)"; trap 'rm -rf "$$ca_dir"' EXIT; \
	curl -sfL --proto '=https' -o "$$ca_dir/$(CA4_DB_CA_KEY)" "$(CA4_DB_CA_URL)" && \
	grep -q 'BEGIN CERTIFICATE' "$$ca_dir/$(CA4_DB_CA_KEY)" || \
		{ echo "$@: cannot fetch the database CA bundle from $(CA4_DB_CA_URL)" >&2; exit 1; }; \
	kubectl -n $(CA4_APP_NAMESPACE) create configmap $(CA4_DB_CA_CONFIGMAP) --from-file="$$ca_dir" \
		--dry-run=client -o yaml | kubectl apply -f -
	@# The pods read the database URL at start only: the checksum of what the live Secret now holds
	@# rolls them when it changed (a rotated password), and only then.
	bucket="$$($(CA4_TF_OUTPUT) archive_bucket_name)"; \
	region="$$($(CA4_TF_OUTPUT) archive_bucket_region)"; \
	secret_checksum="$$($(CA4_APP_SECRET_CHECKSUM))"; \
	helm upgrade --install ca4-app $(CA4_HELM_DIR)/ca4-app \
		--namespace $(CA4_APP_NAMESPACE) \
		-f $(CA4_HELM_DIR)/ca4-app/values-$(ENV).yaml $(call CA4_VALUES_ARGS,$(CA4_APP_VALUES)) \
		--set-string image.tag=$(CA4_IMAGE_TAG) \
		$(if $(CA4_IMAGE_REGISTRY),--set-string image.registry='$(CA4_IMAGE_REGISTRY)') \
		--set-string secrets.existingSecretChecksum="$$secret_checksum" \
		$(if $(CA4_INGRESS_HOST),--set-string ingress.host='$(CA4_INGRESS_HOST)') \
		--set-string config.s3.bucket="$$bucket" \
		--set-string config.s3.region="$$region" \
		--description "image $(CA4_IMAGE_TAG)" \
		--wait --timeout $(CA4_HELM_TIMEOUT)

.PHONY: ca4-verify-e2e
ca4-verify-e2e: ## 8. End-to-end check on K3s: report -> Kafka -> store -> archive (ca4 verify)
	@$(CA4_PREFLIGHT) $@ uv kubectl terraform -- file:CA4_KUBECONFIG CA4_API_KEY CA4_GRAFANA_TOKEN
	@# ca4 verify opens its own kubectl port-forwards; the archive is read with your AWS credentials.
	bucket="$$($(CA4_TF_OUTPUT) archive_bucket_name)"; \
	region="$$($(CA4_TF_OUTPUT) archive_bucket_region)"; \
	CA4_S3_BUCKET="$$bucket" CA4_S3_REGION="$$region" uv run ca4 verify --target k3s

.PHONY: ca4-destroy
ca4-destroy: ## Tear down: Terraform destroy, keeping the archive bucket unless DESTROY_ARCHIVE=yes
	@$(CA4_TF_PREFLIGHT)
	@$(MAKE) -f $(firstword $(MAKEFILE_LIST)) ca4-tf-init
ifeq ($(DESTROY_ARCHIVE),yes)
	@echo "ca4-destroy: DESTROY_ARCHIVE=yes: the archive bucket and every archived event will be deleted"
	$(CA4_TF_ENV) terraform -chdir=$(CA4_TF_DIR) apply -input=false $(CA4_TF_VAR_ARGS) \
		-var archive_force_destroy=true -target=module.archive_bucket
	$(CA4_TF_ENV) terraform -chdir=$(CA4_TF_DIR) destroy -input=false $(CA4_TF_VAR_ARGS) -var archive_force_destroy=true
else
	@echo "ca4-destroy: keeping the archive bucket and its KMS key (DESTROY_ARCHIVE=yes deletes them too)"
	$(CA4_TF_ENV) terraform -chdir=$(CA4_TF_DIR) destroy -input=false $(CA4_TF_VAR_ARGS) \
		-target=module.k3s -target=module.bastion -target=module.documentdb \
		-target=module.security -target=module.network -target=aws_key_pair.operator
endif

.PHONY: dev-api
dev-api: ## Run the processor with reload on CA4_DEVSTACK_PROCESSOR_PORT (8000) against the dev stack (make devstack-up; after make dev, stop its processor first: uv run ca4 devstack stop processor)
	@$(CA4_PREFLIGHT) $@ uv
	@if [ -z "$${CA4_KAFKA_BOOTSTRAP_SERVERS:-}" ]; then eval "$$(uv run ca4 devstack env)"; fi; \
		set -x; uv run uvicorn ca4_processor.main:app --reload --host 127.0.0.1 --port "$${CA4_DEVSTACK_PROCESSOR_PORT:-8000}"

.PHONY: dev-ngrok
dev-ngrok: ## Expose the dev edge (ingest, /sdk/ and the read API; make dev) on a public HTTPS URL for Colab (ngrok, NGROK_AUTHTOKEN)
	@$(CA4_PREFLIGHT) $@ ngrok -- NGROK_AUTHTOKEN
	ngrok http 127.0.0.1:$${CA4_DEVSTACK_EDGE_PORT:-8002}

.PHONY: dev-kafka-tunnel
dev-kafka-tunnel: ## Tunnel the K3s Kafka to localhost:9092 through the bastion (TUNNEL listener)
	@$(CA4_PREFLIGHT) $@ terraform ssh
	$(CA4_SCRIPTS)/tunnel.sh kafka
