{{/*
Return the labels every resource carries.
*/}}
{{- define "ca4-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ca4
app.kubernetes.io/instance: {{ .Release.Name }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Return the selector labels of one component. Usage: include "ca4-platform.selectorLabels" (dict "root" $ "name" "kafka")
The name label is the bare component name: the Prometheus config keeps pods named kafka.
*/}}
{{- define "ca4-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/*
Return the restricted-profile container security context shared by every non-root component.
*/}}
{{- define "ca4-platform.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
Return a pod security context for a non-root user id. Usage: include "ca4-platform.podSecurityContext" 1000
*/}}
{{- define "ca4-platform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Return a file of the chart: the synced observability/ copy when it exists, else the chart default,
rendered with tpl. Usage: include "ca4-platform.configFile" (dict "root" $ "synced" "files/observability/loki/loki-k8s.yml" "default" "files/defaults/loki.yaml")
*/}}
{{- define "ca4-platform.configFile" -}}
{{- $synced := .root.Files.Get .synced -}}
{{- if $synced -}}
{{- $synced -}}
{{- else -}}
{{- tpl (.root.Files.Get .default) .root -}}
{{- end -}}
{{- end -}}

{{/*
Return the Kafka headless-service DNS name of broker N. Usage: include "ca4-platform.kafkaPodHost" (dict "root" $ "i" 0)
*/}}
{{- define "ca4-platform.kafkaPodHost" -}}
{{- printf "kafka-%d.kafka-headless.%s.svc.cluster.local" (int .i) .root.Release.Namespace -}}
{{- end -}}

{{/*
Return the URL of the JMX exporter javaagent jar: kafka.metrics.agent.version in the Maven layout under kafka.metrics.agent.repositoryUrl.
*/}}
{{- define "ca4-platform.kafkaAgentUrl" -}}
{{- $a := .Values.kafka.metrics.agent -}}
{{- printf "%s/io/prometheus/jmx/jmx_prometheus_javaagent/%s/jmx_prometheus_javaagent-%s.jar" (trimSuffix "/" $a.repositoryUrl) $a.version $a.version -}}
{{- end -}}

{{/*
Return the TCP port kafka.metrics.agent.repositoryUrl is reached on: the one it names, else 443 for https and 80 for http.
*/}}
{{- define "ca4-platform.kafkaAgentRepositoryPort" -}}
{{- $url := urlParse .Values.kafka.metrics.agent.repositoryUrl -}}
{{- $hostPort := splitList ":" $url.host -}}
{{- if gt (len $hostPort) 1 -}}
{{- last $hostPort -}}
{{- else if eq $url.scheme "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{/*
Return the reserved documentation domain (RFC 2606/6761: example.com, example.org, example.net,
the .example, .invalid, .localhost TLDs) a host name is in, or nothing. Usage: include "ca4-platform.placeholderDomain" "smtp.example.org"
*/}}
{{- define "ca4-platform.placeholderDomain" -}}
{{- $host := . | default "" | lower | trimSuffix "." -}}
{{- $found := "" -}}
{{- range list "example.com" "example.org" "example.net" "example" "invalid" "localhost" -}}
{{- if and (not $found) (or (eq $host .) (hasSuffix (printf ".%s" .) $host)) -}}
{{- $found = . -}}
{{- end -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{/*
Return a size in MiB, rounded down: a PVC size (Mi, Gi, Ti) or a Prometheus size (B, KB, MB, GB, TB: powers of 2 too). Usage: include "ca4-platform.sizeMi" "10Gi"
*/}}
{{- define "ca4-platform.sizeMi" -}}
{{- $size := toString . -}}
{{- $number := regexFind "^[0-9]+" $size -}}
{{- $unit := trimPrefix $number $size -}}
{{- $bytes := dict "B" 1 "KB" 1024 "MB" 1048576 "Mi" 1048576 "GB" 1073741824 "Gi" 1073741824 "TB" 1099511627776 "Ti" 1099511627776 -}}
{{- div (mul (int64 $number) (get $bytes $unit | int64)) 1048576 -}}
{{- end -}}

{{/*
Return the storage request of a StatefulSet's volume template "data": the live StatefulSet's when the release already runs it, else size. Kubernetes refuses every change to a StatefulSet's volumeClaimTemplates (helm upgrade would fail), and K3s's local-path does not enforce a claim's size anyway: the value then only feeds the capacity checks, which is what raising it with a larger data disk means. Usage: include "ca4-platform.claimSize" (dict "root" $ "namespace" $ns "name" "kafka" "size" $k.persistence.size)
*/}}
{{- define "ca4-platform.claimSize" -}}
{{- $kept := "" -}}
{{- $live := lookup "apps/v1" "StatefulSet" .namespace .name -}}
{{- range (dig "spec" "volumeClaimTemplates" list $live) -}}
{{- if eq (dig "metadata" "name" "" .) "data" -}}
{{- $kept = dig "spec" "resources" "requests" "storage" "" . -}}
{{- end -}}
{{- end -}}
{{- default .size $kept -}}
{{- end -}}

{{/*
Return the storage request of a PersistentVolumeClaim: the live claim's when it exists and its StorageClass cannot expand volumes (K3s's local-path cannot: resizing such a bound claim is refused, so helm upgrade would fail), else size. As for claimSize, the value then only feeds the capacity checks. Usage: include "ca4-platform.pvcSize" (dict "namespace" $ns "name" "prometheus-data" "size" $p.persistence.size)
*/}}
{{- define "ca4-platform.pvcSize" -}}
{{- $size := .size -}}
{{- $live := lookup "v1" "PersistentVolumeClaim" .namespace .name -}}
{{- if $live -}}
{{- $class := lookup "storage.k8s.io/v1" "StorageClass" "" (dig "spec" "storageClassName" "" $live) -}}
{{- if not (dig "allowVolumeExpansion" false $class) -}}
{{- $size = dig "spec" "resources" "requests" "storage" $size $live -}}
{{- end -}}
{{- end -}}
{{- $size -}}
{{- end -}}

{{/*
Return Prometheus's TSDB retention size: prometheus.retentionSize, or 80% of prometheus.persistence.size (in MB, Prometheus's MiB).
*/}}
{{- define "ca4-platform.prometheusRetentionSize" -}}
{{- $p := .Values.prometheus -}}
{{- if $p.retentionSize -}}
{{- $p.retentionSize -}}
{{- else -}}
{{- printf "%dMB" (div (mul (include "ca4-platform.sizeMi" $p.persistence.size | int64) 8) 10) -}}
{{- end -}}
{{- end -}}

{{/*
Return every values problem the schema cannot express, then fail once with all of them.
*/}}
{{- define "ca4-platform.validateValues" -}}
{{- $messages := list -}}
{{- $k := .Values.kafka -}}
{{- if ne .Release.Namespace .Values.namespaces.platform -}}
{{- $messages = append $messages (printf "namespaces.platform (%s) must be the release namespace (%s): install with -n %s" .Values.namespaces.platform .Release.Namespace .Values.namespaces.platform) -}}
{{- end -}}
{{- if and $k.enabled (gt (int $k.defaultReplicationFactor) (int $k.replicas)) -}}
{{- $messages = append $messages (printf "kafka.defaultReplicationFactor (%d) exceeds kafka.replicas (%d)" (int $k.defaultReplicationFactor) (int $k.replicas)) -}}
{{- end -}}
{{- if and $k.enabled (gt (int $k.minInsyncReplicas) (int $k.defaultReplicationFactor)) -}}
{{- $messages = append $messages (printf "kafka.minInsyncReplicas (%d) exceeds kafka.defaultReplicationFactor (%d): acks=all producers would always fail" (int $k.minInsyncReplicas) (int $k.defaultReplicationFactor)) -}}
{{- end -}}
{{- if and $k.enabled (eq (mod (int $k.replicas) 2) 0) -}}
{{- $messages = append $messages (printf "kafka.replicas (%d) must be odd: a KRaft quorum of an even size tolerates no more failures than one node fewer" (int $k.replicas)) -}}
{{- end -}}
{{- if and $k.enabled (not $k.allowVoterChange) -}}
{{- /* An upgrade: the release's StatefulSet (nothing under helm template, or on a first install). */ -}}
{{- $live := lookup "apps/v1" "StatefulSet" .Release.Namespace "kafka" -}}
{{- if $live -}}
{{- $liveReplicas := int (dig "spec" "replicas" 0 $live) -}}
{{- if ne $liveReplicas (int $k.replicas) -}}
{{- $messages = append $messages (printf "kafka.replicas (%d) differs from the %d replica(s) of the live StatefulSet %s/kafka: every broker's static KRaft voter list (controller.quorum.voters) would change in a rolling restart, which a static quorum cannot take. Keep kafka.replicas=%d, or plan the downtime (docs/provisioning.md, \"Changing kafka.replicas\") and upgrade with kafka.allowVoterChange=true" (int $k.replicas) $liveReplicas .Release.Namespace $liveReplicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $k.topics -}}
{{- if gt (int .replicationFactor) (int $k.replicas) -}}
{{- $messages = append $messages (printf "kafka.topics %s: replicationFactor (%d) exceeds kafka.replicas (%d)" .name (int .replicationFactor) (int $k.replicas)) -}}
{{- end -}}
{{- end -}}
{{- if and $k.enabled (hasSuffix "Gi" (toString $k.persistence.size)) -}}
{{- $partitions := 0 -}}
{{- range $k.topics -}}{{- $partitions = add $partitions (int .partitions) -}}{{- end -}}
{{- $needMi := div (mul $partitions (add (int64 $k.logRetentionBytesPerPartition) (int64 $k.logSegmentBytes))) 1048576 -}}
{{- if gt (int64 $needMi) (mul 1024 (int64 (trimSuffix "Gi" (toString $k.persistence.size)))) -}}
{{- $messages = append $messages (printf "kafka.persistence.size (%s) is smaller than %d partitions x (logRetentionBytesPerPartition + logSegmentBytes) = %dMi: the brokers would fill their volumes" $k.persistence.size $partitions (int64 $needMi)) -}}
{{- end -}}
{{- else if $k.enabled -}}
{{- $messages = append $messages (printf "kafka.persistence.size (%s) must be given in Gi" $k.persistence.size) -}}
{{- end -}}
{{- /* The log cleaner allocates its dedupe buffer whole in the heap at start: a 256m heap with Kafka's 128 MiB default died of OutOfMemoryError, a 384m one (256 MiB besides the buffer) runs. */ -}}
{{- /* The JVM takes the last -Xmx; without one this check is skipped (the JVM sizes its heap). */ -}}
{{- $xmx := regexFindAll "-Xmx[0-9]+[kKmMgGtT]?" (toString $k.heapOpts) -1 | last | default "" | trimPrefix "-Xmx" -}}
{{- if and $k.enabled $xmx -}}
{{- $xmxNumber := regexFind "^[0-9]+" $xmx -}}
{{- $xmxBytes := mul (atoi $xmxNumber) (get (dict "" 1 "k" 1024 "m" 1048576 "g" 1073741824 "t" 1099511627776) (lower (trimPrefix $xmxNumber $xmx)) | int64) -}}
{{- if lt (sub $xmxBytes (int64 $k.logCleanerDedupeBufferBytes)) 268435456 -}}
{{- $messages = append $messages (printf "kafka.logCleanerDedupeBufferBytes (%d) leaves less than 256 MiB of the -Xmx%s heap of kafka.heapOpts: the broker allocates the buffer in its heap at start and would die of OutOfMemoryError; lower it (values-dev.yaml: 33554432) or raise the heap (and kafka.resources.limits.memory with it)" (int64 $k.logCleanerDedupeBufferBytes) $xmx) -}}
{{- end -}}
{{- end -}}
{{- if and $k.enabled $k.metrics.enabled -}}
{{- $listeners := dict "kafka.ports.internal" $k.ports.internal "kafka.ports.controller" $k.ports.controller -}}
{{- if $k.tunnel.enabled -}}{{- $_ := set $listeners "kafka.tunnel.containerPort" $k.tunnel.containerPort -}}{{- end -}}
{{- range $name, $port := $listeners -}}
{{- if eq (int $port) (int $k.metrics.port) -}}
{{- $messages = append $messages (printf "kafka.metrics.port (%d) is also %s: the exporter and that listener cannot share a port" (int $k.metrics.port) $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $k.tunnel.enabled (gt (add (int $k.tunnel.nodePortBase) (int $k.replicas)) 32768) -}}
{{- $messages = append $messages "kafka.tunnel.nodePortBase + kafka.replicas leaves the NodePort range (30000-32767)" -}}
{{- end -}}
{{- $p := .Values.prometheus -}}
{{- if $p.enabled -}}
{{- $retention := include "ca4-platform.prometheusRetentionSize" . -}}
{{- if ge (include "ca4-platform.sizeMi" $retention | int64) (include "ca4-platform.sizeMi" $p.persistence.size | int64) -}}
{{- $messages = append $messages (printf "prometheus.retentionSize (%s) must be smaller than prometheus.persistence.size (%s): K3s local-path does not enforce a PVC's size, so Prometheus would fill the data disk it shares with Kafka and Loki; leave it empty for 80%% of the volume" $retention $p.persistence.size) -}}
{{- end -}}
{{- end -}}
{{- $am := .Values.alertmanager -}}
{{- if and $am.enabled (or $am.receivers.webhook.enabled $am.receivers.slack.enabled $am.receivers.email.enabled $am.heartbeat.enabled) (not $am.existingSecret) -}}
{{- $messages = append $messages "alertmanager.existingSecret is empty: the enabled receivers (and the heartbeat) read their URLs and passwords from it (never from values)" -}}
{{- end -}}
{{- if and $am.enabled $am.receivers.email.enabled -}}
{{- $email := $am.receivers.email -}}
{{- $fromMake := dict "to" "CA4_ALERT_EMAIL_TO" "from" "CA4_ALERT_EMAIL_FROM" "smarthost" "CA4_ALERT_SMTP_SMARTHOST" "authUsername" "CA4_ALERT_SMTP_USERNAME" -}}
{{- $missing := list -}}
{{- range list "to" "from" "smarthost" -}}
{{- if not (get $email .) -}}
{{- $missing = append $missing (printf "%s (%s)" . (get $fromMake .)) -}}
{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- $messages = append $messages (printf "alertmanager.receivers.email needs to, from and smarthost: set %s, e.g. make ca4-platform-setup ENV=prod CA4_ALERT_EMAIL_TO=oncall@<your domain> CA4_ALERT_EMAIL_FROM=alertmanager@<your domain> CA4_ALERT_SMTP_SMARTHOST=<smtp host>:587 CA4_ALERT_SMTP_USERNAME=<smtp user>, or switch the receiver off (alertmanager.receivers.email.enabled=false)" (join ", " $missing)) -}}
{{- end -}}
{{- range $key := list "to" "from" "smarthost" "authUsername" -}}
{{- $value := get $email $key | default "" | toString -}}
{{- /* "to" may list several addresses, each "a@b" or "Name <a@b>": every one is checked */ -}}
{{- range $address := splitList "," $value -}}
{{- $domain := regexReplaceAll ":[0-9]+$" (regexReplaceAll "^.*@" (trim $address | trimSuffix ">") "") "" -}}
{{- $placeholder := include "ca4-platform.placeholderDomain" $domain -}}
{{- if $placeholder -}}
{{- $messages = append $messages (printf "alertmanager.receivers.email.%s: %q is a placeholder (%s, reserved for documentation): no mail would ever arrive; set the real one (make ca4-platform-setup %s=...)" $key (trim $address) $placeholder (get $fromMake $key)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}

{{/*
Return the Alertmanager config: route and inhibitions from the synced observability/alertmanager/alertmanager.yml, one receiver built from alertmanager.receivers (secrets as *_file paths into the mounted Secret), and the receiver the shared tree sends Watchdog to (alertmanager.heartbeat: its URL and repeat interval; no integration when off).
*/}}
{{- define "ca4-platform.alertmanagerConfig" -}}
{{- $shared := required "files/observability/alertmanager/alertmanager.yml is missing: run make helm-sync" (.Files.Get "files/observability/alertmanager/alertmanager.yml") | fromYaml -}}
{{- $r := .Values.alertmanager.receivers -}}
{{- $secrets := "/etc/alertmanager/secrets" -}}
{{- $receiver := dict "name" $shared.route.receiver -}}
{{- if $r.webhook.enabled -}}
{{- $_ := set $receiver "webhook_configs" (list (dict "url_file" (printf "%s/webhook-url" $secrets) "send_resolved" true)) -}}
{{- end -}}
{{- if $r.slack.enabled -}}
{{- $_ := set $receiver "slack_configs" (list (dict "api_url_file" (printf "%s/slack-api-url" $secrets) "channel" $r.slack.channel "send_resolved" true "text" (.Files.Get "files/defaults/alertmanager-slack.tmpl"))) -}}
{{- end -}}
{{- if $r.email.enabled -}}
{{- $email := dict "to" $r.email.to "from" $r.email.from "smarthost" $r.email.smarthost "send_resolved" true -}}
{{- /* Without a user Alertmanager sends no AUTH: a password alone would be ignored in silence */ -}}
{{- if $r.email.authUsername -}}
{{- $_ := set $email "auth_username" $r.email.authUsername -}}
{{- $_ := set $email "auth_password_file" (printf "%s/smtp-password" $secrets) -}}
{{- end -}}
{{- $_ := set $receiver "email_configs" (list $email) -}}
{{- end -}}
{{- /* Watchdog always fires: the shared tree routes it to a receiver of its own (named there), which pings every repeatInterval */ -}}
{{- $hb := .Values.alertmanager.heartbeat -}}
{{- $route := deepCopy $shared.route -}}
{{- $heartbeat := dict -}}
{{- range $route.routes -}}
{{- if has "alertname=\"Watchdog\"" (.matchers | default list) -}}
{{- $heartbeat = dict "name" .receiver -}}
{{- $_ := set . "repeat_interval" $hb.repeatInterval -}}
{{- end -}}
{{- end -}}
{{- if not $heartbeat -}}
{{- fail "files/observability/alertmanager/alertmanager.yml routes Watchdog nowhere: run make helm-sync" -}}
{{- end -}}
{{- if $hb.enabled -}}
{{- $_ := set $heartbeat "webhook_configs" (list (dict "url_file" (printf "%s/heartbeat-url" $secrets) "send_resolved" false)) -}}
{{- end -}}
{{- toYaml (dict "route" $route "inhibit_rules" $shared.inhibit_rules "receivers" (list $receiver $heartbeat)) -}}
{{- end -}}
