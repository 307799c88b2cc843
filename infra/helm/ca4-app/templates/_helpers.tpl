{{/*
Return the chart name, truncated to 63 characters.
*/}}
{{- define "ca4-app.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Return the fully qualified release name, truncated to 63 characters.
*/}}
{{- define "ca4-app.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Return the labels every resource carries.
*/}}
{{- define "ca4-app.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ca4
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Return the selector labels of one component. Usage: include "ca4-app.selectorLabels" (dict "root" $ "component" "processor")
The name label is the bare component name: the Prometheus config keeps pods named processor|worker|reader.
*/}}
{{- define "ca4-app.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/*
Return the resource name of one component. Usage: include "ca4-app.componentName" (dict "root" $ "component" "worker")
*/}}
{{- define "ca4-app.componentName" -}}
{{- printf "%s-%s" (include "ca4-app.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Return the ServiceAccount name.
*/}}
{{- define "ca4-app.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ca4-app.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Return the name of the Secret holding mongo-url and api-key-hashes. The one the chart makes from
secrets.mongoUrl and secrets.apiKeyHashes is not named like the one `make ca4-deploy-app` creates
outside Helm (ca4-app-secrets), so moving between the two never has Helm adopt or delete the other.
*/}}
{{- define "ca4-app.secretName" -}}
{{- default (printf "%s-inline-secrets" (include "ca4-app.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/*
Return the image reference of one component. Usage: include "ca4-app.image" (dict "root" $ "repository" "ca4-worker")
*/}}
{{- define "ca4-app.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/*
Return the reserved documentation domain (RFC 2606/6761: example.com, example.org, example.net,
the .example, .invalid, .localhost TLDs) a host name or address is in, or nothing. Usage: include "ca4-app.placeholderDomain" "api.ca4.example.com"
*/}}
{{- define "ca4-app.placeholderDomain" -}}
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
Return every values problem the schema cannot express, then fail once with all of them.
*/}}
{{- define "ca4-app.validateValues" -}}
{{- $messages := list -}}
{{- if has (default .Chart.AppVersion .Values.image.tag) (list "latest" "main" "master" "stable" "edge") -}}
{{- $messages = append $messages (printf "image.tag: %q is a rolling tag; pin a release version" .Values.image.tag) -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (or (not .Values.secrets.mongoUrl) (not .Values.secrets.apiKeyHashes)) -}}
{{- $messages = append $messages "secrets: set secrets.existingSecret, or both secrets.mongoUrl and secrets.apiKeyHashes" -}}
{{- end -}}
{{- if and .Values.secrets.existingSecret (or .Values.secrets.mongoUrl .Values.secrets.apiKeyHashes) -}}
{{- $messages = append $messages "secrets: secrets.mongoUrl/apiKeyHashes are ignored when secrets.existingSecret is set; set only one of them" -}}
{{- end -}}
{{- if and .Values.secrets.existingSecretChecksum (not .Values.secrets.existingSecret) -}}
{{- $messages = append $messages "secrets: secrets.existingSecretChecksum is the checksum of secrets.existingSecret, which is empty; the Secret the chart creates has its own" -}}
{{- end -}}
{{- if and (eq .Values.config.otel.exporter "otlp") (not .Values.config.otel.endpoint) -}}
{{- $messages = append $messages "config.otel: exporter otlp needs config.otel.endpoint" -}}
{{- end -}}
{{- if and (eq .Values.config.otel.exporter "otlp") .Values.config.otel.endpoint -}}
{{- $otlp := urlParse .Values.config.otel.endpoint -}}
{{- if or (not (hasSuffix "/v1/traces" $otlp.path)) (hasSuffix ":4317" $otlp.host) -}}
{{- $messages = append $messages (printf "config.otel.endpoint: %q is not an OTLP/HTTP traces URL; the services export OTLP over HTTP (port 4318, path /v1/traces), 4317 is gRPC" .Values.config.otel.endpoint) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.databaseCidrs) (not .Values.networkPolicy.databaseNamespace) -}}
{{- $messages = append $messages "networkPolicy: set databaseCidrs or databaseNamespace, or the worker reaches no database" -}}
{{- end -}}
{{- range .Values.ingress.routes -}}
{{- if not (has .component (list "processor" "worker")) -}}
{{- $messages = append $messages (printf "ingress.routes %s: component %q is neither processor nor worker" .path .component) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.reader.enabled (lt (int .Values.reader.replicaCount) 1) -}}
{{- $messages = append $messages "reader: enabled with replicaCount 0 sends every read to no pod (503s that no CA4 alert sees); set reader.replicaCount to 1 or more, or reader.enabled=false to serve reads from the worker" -}}
{{- end -}}
{{- $as := .Values.processor.autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- $messages = append $messages (printf "processor.autoscaling: minReplicas (%d) is greater than maxReplicas (%d)" (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}
{{- if .Values.processor.pdb.enabled -}}
{{- $replicas := ternary $as.minReplicas .Values.processor.replicaCount $as.enabled -}}
{{- if and (kindIs "float64" .Values.processor.pdb.minAvailable) (ge (int .Values.processor.pdb.minAvailable) (int $replicas)) -}}
{{- $messages = append $messages (printf "processor.pdb: minAvailable (%d) must be below the replica count (%d), or no node could ever be drained" (int .Values.processor.pdb.minAvailable) (int $replicas)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.tlsSecretName (not .Values.ingress.host) -}}
{{- $messages = append $messages (printf "ingress: tlsSecretName needs a host: set ingress.host to the API's public DNS name, the one the certificate in the Secret %s names (make ca4-deploy-app CA4_INGRESS_HOST=api.<your domain>)" .Values.ingress.tlsSecretName) -}}
{{- end -}}
{{- $placeholder := include "ca4-app.placeholderDomain" .Values.ingress.host -}}
{{- if and .Values.ingress.enabled (eq .Values.config.environment "prod") $placeholder -}}
{{- $messages = append $messages (printf "ingress.host: %q is a placeholder (%s, reserved for documentation): a prod edge needs the API's public DNS name, a CNAME to the NLB (terraform output ingress_dns_name) that the certificate in ingress.tlsSecretName names; run make ca4-deploy-app ENV=prod CA4_INGRESS_HOST=api.<your domain>" .Values.ingress.host $placeholder) -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}

{{/*
Return one component's Deployment. Usage: include "ca4-app.deployment" (dict "root" $ "component" "processor" "values" .Values.processor "secretEnv" (list ...) "env" (list (dict "name" ... "value" ...)))
Every component mounts the Secret's `api-key-hashes` as the keys file (CA4_API_KEYS_FILE): the
kubelet refreshes a mounted Secret, so a revoked key stops working without a restart.
*/}}
{{- define "ca4-app.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ca4-app.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ca4-app.labels" $root | nindent 4 }}
    {{- include "ca4-app.selectorLabels" . | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $v.replicaCount }}
  {{- else }}
  {{- /* The autoscaler owns the count, but a manifest without `replicas` makes Helm's three-way
  merge delete the field when autoscaling is switched on, and the Deployment drops to one pod
  until the autoscaler acts: render what runs now (the minimum on a first install). */}}
  {{- $live := lookup "apps/v1" "Deployment" $root.Release.Namespace (include "ca4-app.componentName" .) }}
  replicas: {{ dig "spec" "replicas" $v.autoscaling.minReplicas $live | int }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ca4-app.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "ca4-app.labels" $root | nindent 8 }}
        {{- include "ca4-app.selectorLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if not $root.Values.secrets.existingSecret }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- else if $root.Values.secrets.existingSecretChecksum }}
        {{- /* The existing Secret's env keys (CA4_MONGO_URL) are read at start only: a new checksum rolls the pods. */}}
        checksum/secret: {{ $root.Values.secrets.existingSecretChecksum | quote }}
        {{- end }}
        {{- if $root.Values.metrics.scrapeAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $v.containerPort | quote }}
        prometheus.io/path: {{ $root.Values.metrics.path | quote }}
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "ca4-app.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "ca4-app.image" (dict "root" $root "repository" $v.repository) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ $v.containerPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "ca4-app.fullname" $root }}-config
          env:
            - name: CA4_API_KEYS_FILE
              value: /etc/ca4/keys/api-keys
            {{- range .secretEnv }}
            - name: {{ .name }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "ca4-app.secretName" $root }}
                  key: {{ .key }}
            {{- end }}
            {{- range .env }}
            - name: {{ .name }}
              value: {{ .value | quote }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $v.startupProbe }}
          startupProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          livenessProbe:
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $v.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: api-keys
              mountPath: /etc/ca4/keys
              readOnly: true
            {{- if and .caBundle .caBundle.configMap }}
            # The database's CA bundle: the mongo-url Secret names tlsCAFile=<mountDir>/<key>.
            - name: db-ca
              mountPath: {{ .caBundle.mountDir }}
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        - name: api-keys
          secret:
            secretName: {{ include "ca4-app.secretName" $root }}
            defaultMode: 0440
            items:
              - key: api-key-hashes
                path: api-keys
        {{- if and .caBundle .caBundle.configMap }}
        - name: db-ca
          configMap:
            name: {{ .caBundle.configMap }}
            items:
              - key: {{ .caBundle.key }}
                path: {{ .caBundle.key }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        {{- if $v.affinity }}
        {{- toYaml $v.affinity | nindent 8 }}
        {{- else }}
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "ca4-app.selectorLabels" . | nindent 20 }}
        {{- end }}
{{- end -}}

{{/*
Return the ingress rule of the pods that serve the read API (the worker, the reader): its HTTP
port from inside the namespace, the ingress controller and Prometheus.
*/}}
{{- define "ca4-app.ingressReads" -}}
{{- $np := .Values.networkPolicy -}}
- from:
    - podSelector: {}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $np.ingressNamespace }}
      podSelector:
        matchLabels:
          {{- toYaml $np.ingressPodLabels | nindent 10 }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $np.monitoringNamespace }}
  ports:
    - port: http
      protocol: TCP
{{- end -}}

{{/*
Return the egress rule every pod needs: cluster DNS.
*/}}
{{- define "ca4-app.egressDns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}

{{/*
Return the egress rules the consumers and the processor need: cluster DNS and the Kafka client port.
*/}}
{{- define "ca4-app.egressDnsAndKafka" -}}
{{ include "ca4-app.egressDns" . }}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.kafkaNamespace }}
  ports:
    - {port: {{ .Values.networkPolicy.kafkaPort }}, protocol: TCP}
{{- end -}}


{{/*
Return the egress rule to the database (config.mongo.port, to networkPolicy.databaseCidrs or
databaseNamespace): the worker's store and the processor's session ownership claims.
*/}}
{{- define "ca4-app.egressDatabase" -}}
{{- $np := .Values.networkPolicy -}}
- ports:
    - {port: {{ .Values.config.mongo.port }}, protocol: TCP}
  to:
    {{- range $np.databaseCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with $np.databaseNamespace }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . }}
    {{- end }}
{{- end -}}

{{/*
Return one egress rule to the host and port of a URL: its namespace when the host is a cluster
service name (<svc>.<ns>.svc[.cluster.local]), any address otherwise. Usage: include "ca4-app.egressToUrl" "http://minio.platform.svc:9000"
*/}}
{{- define "ca4-app.egressToUrl" -}}
{{- $url := urlParse . -}}
{{- $hostPort := splitList ":" $url.host -}}
{{- $hostname := first $hostPort -}}
{{- $port := ternary (last $hostPort) (ternary "443" "80" (eq $url.scheme "https")) (eq (len $hostPort) 2) -}}
{{- $labels := splitList "." $hostname -}}
- ports:
    - {port: {{ $port }}, protocol: TCP}
  {{- if and (gt (len $labels) 2) (eq (index $labels 2) "svc") }}
  to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ index $labels 1 }}
  {{- end }}
{{- end -}}

{{/*
Return the component that serves the read routes: the reader when reader.enabled, else the worker.
*/}}
{{- define "ca4-app.readComponent" -}}
{{- ternary "reader" "worker" .Values.reader.enabled -}}
{{- end -}}

{{/*
Return one component's ClusterIP Service on its http port. Usage: include "ca4-app.service" (dict "root" $ "component" "worker" "port" 80)
*/}}
{{- define "ca4-app.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ca4-app.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "ca4-app.labels" .root | nindent 4 }}
    {{- include "ca4-app.selectorLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "ca4-app.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{/*
Return one component's PodDisruptionBudget. Usage: include "ca4-app.pdb" (dict "root" $ "component" "worker" "budget" (dict "maxUnavailable" 1))
*/}}
{{- define "ca4-app.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ca4-app.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "ca4-app.labels" .root | nindent 4 }}
    {{- include "ca4-app.selectorLabels" . | nindent 4 }}
spec:
  {{- toYaml .budget | nindent 2 }}
  selector:
    matchLabels:
      {{- include "ca4-app.selectorLabels" . | nindent 6 }}
{{- end -}}
