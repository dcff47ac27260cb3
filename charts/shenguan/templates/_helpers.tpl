{{/*
Names and labels.
*/}}
{{- define "shenguan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shenguan.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shenguan.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shenguan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shenguan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shenguan.labels" -}}
helm.sh/chart: {{ include "shenguan.chart" . }}
{{ include "shenguan.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: shenguan
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Per role, (dict "root" . "role" "all"|"ingest"|"ledger"). Role all is the combined mode: the
release's name, its labels and selector as they always were. With split.enabled each role's
Deployment, Service, PDB and HPA are named <fullname>-<role>, except the ledger's Service, which
keeps <fullname> (the API and console of people and department systems), and select the role's
pods by app.kubernetes.io/component.
*/}}
{{- define "shenguan.nameFor" -}}
{{- $fullname := include "shenguan.fullname" .root }}
{{- if eq .role "all" }}{{ $fullname }}{{ else }}{{ printf "%s-%s" $fullname .role | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "shenguan.selectorFor" -}}
{{ include "shenguan.selectorLabels" .root }}
{{- if ne .role "all" }}
app.kubernetes.io/component: {{ .role }}
{{- end }}
{{- end }}

{{- define "shenguan.labelsFor" -}}
helm.sh/chart: {{ include "shenguan.chart" .root }}
{{ include "shenguan.selectorLabels" .root }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ if eq .role "all" }}gateway{{ else }}{{ .role }}{{ end }}
app.kubernetes.io/part-of: shenguan
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The roles the chart runs: ["all"], or ["ledger", "ingest"] with split.enabled. */}}
{{- define "shenguan.roles" -}}
{{- if .Values.split.enabled }}["ledger","ingest"]{{ else }}["all"]{{ end }}
{{- end }}

{{- define "shenguan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shenguan.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shenguan.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/*
Modes. "true" or "" (empty is false in templates).
  kafkaBus:        config.bus.url is kafka://…
  postgresLedger:  ledger.type is postgres
  shared:          both — pods keep no state and may be replicated
*/}}
{{- define "shenguan.kafkaBus" -}}
{{- if hasPrefix "kafka://" .Values.config.bus.url }}true{{ end }}
{{- end }}

{{- define "shenguan.postgresLedger" -}}
{{- if eq .Values.ledger.type "postgres" }}true{{ end }}
{{- end }}

{{- define "shenguan.shared" -}}
{{- if and (include "shenguan.kafkaBus" .) (include "shenguan.postgresLedger" .) }}true{{ end }}
{{- end }}

{{/* Name of the Secret the chart creates. */}}
{{- define "shenguan.secretName" -}}
{{- printf "%s-secret" (include "shenguan.fullname" .) }}
{{- end }}

{{/* Whether the chart creates its Secret: something secret was given in values. */}}
{{- define "shenguan.createSecret" -}}
{{- if or (and (include "shenguan.postgresLedger" .) .Values.ledger.url (not .Values.ledger.existingSecret)) (and .Values.auth.tokens (not .Values.auth.existingSecret)) .Values.secretEnv }}true{{ end }}
{{- end }}

{{/* The Secret holding tokens.toml, if any. */}}
{{- define "shenguan.tokensSecret" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}
{{- else if .Values.auth.tokens }}{{ include "shenguan.secretName" . }}
{{- end }}
{{- end }}

{{/*
Checks that cannot be expressed in values.schema.json. Each failure says what to change.
*/}}
{{- define "shenguan.validate" -}}
{{- if and .Values.split.enabled (not (include "shenguan.shared" .)) }}
{{- fail (printf "split.enabled runs ingest and ledger pods that meet on the bus: set config.bus.url to kafka://host:port and ledger.type to postgres (got bus %q, ledger %q)" .Values.config.bus.url .Values.ledger.type) }}
{{- end }}
{{- with .Values.split.ingest.autoscaling }}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- fail "split.ingest.autoscaling.minReplicas must not exceed split.ingest.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .enabled (not .targetCPUUtilizationPercentage) (not .targetMemoryUtilizationPercentage) }}
{{- fail "split.ingest.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
{{- $replicated := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $replicated (not (include "shenguan.shared" .)) }}
{{- fail (printf "replicaCount %v%s needs a shared bus and ledger: set config.bus.url to kafka://host:port and ledger.type to postgres (got bus %q, ledger %q). The embedded bus and the SQLite ledger are files on one pod's volume; a second pod would not see them." .Values.replicaCount (ternary " with autoscaling" "" .Values.autoscaling.enabled) .Values.config.bus.url .Values.ledger.type) }}
{{- end }}
{{- if include "shenguan.postgresLedger" . }}
{{- if and (not .Values.ledger.url) (not .Values.ledger.existingSecret) }}
{{- fail "ledger.type postgres needs ledger.url (postgres://user:password@host:5432/db) or ledger.existingSecret" }}
{{- end }}
{{- else if or .Values.ledger.url .Values.ledger.existingSecret }}
{{- fail "ledger.url and ledger.existingSecret are for ledger.type postgres; the SQLite ledger is always on the data volume" }}
{{- end }}
{{- if and .Values.auth.tokens .Values.auth.existingSecret }}
{{- fail "set either auth.tokens or auth.existingSecret, not both" }}
{{- end }}
{{- $grace := int .Values.config.server.shutdown_grace_seconds }}
{{- $needed := add $grace (int .Values.preStopSleepSeconds) }}
{{- if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than preStopSleepSeconds + config.server.shutdown_grace_seconds (%d), or Kubernetes kills requests the gateway is still finishing" (int .Values.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- range $name, $_ := .Values.secretEnv }}
{{- if hasPrefix "SHENGUAN_" $name }}
{{- if and (not (hasPrefix "SHENGUAN_KAFKA_" $name)) (ne $name "SHENGUAN_LEDGER") }}
{{- fail (printf "secretEnv %s: only SHENGUAN_KAFKA_<PROPERTY> and the catalog's secret_env names belong here (the ledger URL goes to ledger.url)" $name) }}
{{- end }}
{{- if eq $name "SHENGUAN_LEDGER" }}
{{- fail "secretEnv SHENGUAN_LEDGER: use ledger.type postgres and ledger.url" }}
{{- end }}
{{- end }}
{{- end }}
{{- range $path, $_ := .Values.adapters.files }}
{{- if or (contains "__" $path) (hasPrefix "/" $path) (contains ".." $path) }}
{{- fail (printf "adapters.files %q: a relative path <system>/<file>.yaml without \"__\" or \"..\"" $path) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The adapter files, as YAML {relative path: content}: the shipped copy (files/adapters/**)
unless adapters.shipped is false, then adapters.files (which win for the same path).
*/}}
{{- define "shenguan.adapterFiles" -}}
{{- $files := dict }}
{{- if .Values.adapters.shipped }}
{{- range $path, $_ := .Files.Glob "files/adapters/**" }}
{{- $_ := set $files (trimPrefix "files/adapters/" $path) ($.Files.Get $path) }}
{{- end }}
{{- end }}
{{- range $path, $content := .Values.adapters.files }}
{{- $_ := set $files $path $content }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* ConfigMap key for an adapter path: "/" is not allowed in keys. */}}
{{- define "shenguan.adapterKey" -}}
{{- replace "/" "__" . }}
{{- end }}

{{/* The routing catalog text. */}}
{{- define "shenguan.catalog" -}}
{{- if .Values.catalog.routing }}
{{- .Values.catalog.routing }}
{{- else }}
{{- .Files.Get "files/catalog/routing.yaml" }}
{{- end }}
{{- end }}

{{/*
shenguan.toml. Strings through toJson (a JSON string is a valid TOML basic string), numbers
through int64 (values arrive as floats).
*/}}
{{- define "shenguan.config" -}}
{{- $c := .Values.config -}}
# shenguan.toml rendered by the Helm chart {{ include "shenguan.chart" . }} (keys: shenguan.example.toml).
# Paths are the pod's. Token hashes from the Secret are appended when the pod starts.
data_dir = "/var/lib/shenguan"
adapters_dir = "/etc/shenguan/adapters"
schemas_dir = "/etc/shenguan/schemas"
catalog_file = "/etc/shenguan/catalog/routing.yaml"
calendar_dir = "/etc/shenguan/calendar"
policies_dir = "/etc/shenguan/policies"
{{- with $c.policy }}
policy = {{ . | toJson }}
{{- end }}

[server]
listen = "0.0.0.0:{{ int64 .Values.containerPort }}"
max_body_bytes = {{ int64 $c.server.max_body_bytes }}
max_batch_records = {{ int64 $c.server.max_batch_records }}
shutdown_grace_seconds = {{ int64 $c.server.shutdown_grace_seconds }}

[tracker]
interval_seconds = {{ int64 $c.tracker.interval_seconds }}

[delivery]
max_attempts = {{ int64 $c.delivery.max_attempts }}
initial_backoff_ms = {{ int64 $c.delivery.initial_backoff_ms }}
max_backoff_ms = {{ int64 $c.delivery.max_backoff_ms }}
timeout_ms = {{ int64 $c.delivery.timeout_ms }}
interval_ms = {{ int64 $c.delivery.interval_ms }}
apply_wait_ms = {{ int64 $c.delivery.apply_wait_ms }}

[bus]
url = {{ $c.bus.url | toJson }}
topic_prefix = {{ $c.bus.topic_prefix | toJson }}

[bus.kafka]
partitions = {{ int64 $c.bus.kafka.partitions }}
replication_factor = {{ int64 $c.bus.kafka.replication_factor }}
publish_timeout_ms = {{ int64 $c.bus.kafka.publish_timeout_ms }}
linger_ms = {{ int64 $c.bus.kafka.linger_ms }}
compression = {{ $c.bus.kafka.compression | toJson }}
session_timeout_ms = {{ int64 $c.bus.kafka.session_timeout_ms }}
client_id = {{ $c.bus.kafka.client_id | toJson }}

[bus.kafka.properties]
{{- range $key, $value := $c.bus.kafka.properties }}
{{ $key | toJson }} = {{ $value | toString | toJson }}
{{- end }}

[ledger]
{{- if include "shenguan.postgresLedger" . }}
# PostgreSQL: the URL comes from the Secret as SHENGUAN_LEDGER.
{{- else }}
url = "sqlite:/var/lib/shenguan/ledger.db"
{{- end }}
burst = {{ int64 (.Values.ledger.burst | default 2000) }}

[auth]
metrics_public = {{ $c.auth.metrics_public }}

[log]
format = {{ $c.log.format | toJson }}
level = {{ $c.log.level | toJson }}
{{ end }}

{{/* tokens.toml: the [[auth.tokens]] entries appended to shenguan.toml. */}}
{{- define "shenguan.tokens" -}}
# [[auth.tokens]] from the Helm values (SHA-256 hashes of the tokens).
{{- range .Values.auth.tokens }}

[[auth.tokens]]
role = {{ .role | toJson }}
subject = {{ .subject | default "" | toJson }}
sha256 = {{ .sha256 | lower | toJson }}
{{- end }}
{{ end }}
