{{/*
One gateway Deployment: (dict "root" . "role" "all"|"ingest"|"ledger"). Role all is the
Deployment of the combined mode, named as the release; with split.enabled the chart renders an
ingest and a ledger Deployment, each named after its role and selecting its role's pods.
*/}}
{{- define "shenguan.deployment" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $fullname := include "shenguan.fullname" $root }}
{{- $name := include "shenguan.nameFor" (dict "root" $root "role" $role) }}
{{- $shared := include "shenguan.shared" $root }}
{{- $adapters := include "shenguan.adapterFiles" $root | fromJson }}
{{- $tokensSecret := include "shenguan.tokensSecret" $root }}
{{- $replicas := $root.Values.replicaCount }}
{{- $autoscaling := $root.Values.autoscaling }}
{{- $resources := $root.Values.resources }}
{{- $args := list "run" }}
{{- if eq $role "ingest" }}
{{- $replicas = $root.Values.split.ingest.replicaCount }}
{{- $autoscaling = $root.Values.split.ingest.autoscaling }}
{{- $resources = $root.Values.split.ingest.resources }}
{{- end }}
{{- if ne $role "all" }}
{{- $args = list "run" "--role" $role }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "shenguan.labelsFor" (dict "root" $root "role" $role) | nindent 4 }}
  {{- with $root.Values.deploymentAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $autoscaling.enabled }}
  replicas: {{ $replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if $shared }}
  # Kafka bus and PostgreSQL ledger: pods are interchangeable; replace them one at a time.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  {{- else }}
  # Embedded bus / SQLite ledger on one volume: the old pod must stop before the new one starts.
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "shenguan.selectorFor" (dict "root" $root "role" $role) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "shenguan.labelsFor" (dict "root" $root "role" $role) | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # A changed configuration, adapter, catalog, calendar, policy or secret rolls the pods.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        checksum/adapters: {{ include (print $root.Template.BasePath "/configmap-adapters.yaml") $root | sha256sum }}
        checksum/catalog: {{ include (print $root.Template.BasePath "/configmap-catalog.yaml") $root | sha256sum }}
        checksum/calendar: {{ include (print $root.Template.BasePath "/configmap-calendar.yaml") $root | sha256sum }}
        checksum/policies: {{ include (print $root.Template.BasePath "/configmap-policies.yaml") $root | sha256sum }}
        {{- if include "shenguan.createSecret" $root }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "shenguan.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.automountServiceAccountToken }}
      # No SERVICE_* variables: a Service named shenguan-… would inject SHENGUAN_… variables,
      # which the gateway reads as configuration.
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      # Longer than preStopSleepSeconds + config.server.shutdown_grace_seconds (checked at render).
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      initContainers:
        # shenguan.toml = the ConfigMap + the token hashes from the Secret (one file, as the
        # gateway reads one), assembled in memory; nothing secret is in the ConfigMap.
        - name: config
          image: {{ include "shenguan.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            - /bin/sh
            - -ec
            - |
              cat /etc/shenguan/base/shenguan.toml > /run/shenguan/shenguan.toml
              if [ -f /etc/shenguan/tokens/tokens.toml ]; then
                printf '\n' >> /run/shenguan/shenguan.toml
                cat /etc/shenguan/tokens/tokens.toml >> /run/shenguan/shenguan.toml
              fi
              chmod 0440 /run/shenguan/shenguan.toml
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $root.Values.initResources | nindent 12 }}
          volumeMounts:
            - name: config-base
              mountPath: /etc/shenguan/base
              readOnly: true
            {{- if $tokensSecret }}
            - name: tokens
              mountPath: /etc/shenguan/tokens
              readOnly: true
            {{- end }}
            - name: config
              mountPath: /run/shenguan
      containers:
        - name: shenguan
          image: {{ include "shenguan.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["/usr/local/bin/shenguan"]
          args: {{ $args | toJson }}
          env:
            - name: SHENGUAN_CONFIG
              value: /run/shenguan/shenguan.toml
            {{- if include "shenguan.postgresLedger" $root }}
            - name: SHENGUAN_LEDGER
              valueFrom:
                secretKeyRef:
                  {{- if $root.Values.ledger.existingSecret }}
                  name: {{ $root.Values.ledger.existingSecret }}
                  key: {{ $root.Values.ledger.existingSecretKey }}
                  {{- else }}
                  name: {{ include "shenguan.secretName" $root }}
                  key: ledger-url
                  {{- end }}
            {{- end }}
            {{- range $var, $_ := $root.Values.secretEnv }}
            - name: {{ $var }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "shenguan.secretName" $root }}
                  key: {{ $var }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $root.Values.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ $root.Values.containerPort }}
              protocol: TCP
          {{- with $root.Values.probes.startup }}
          {{- if .enabled }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ .timeoutSeconds }}
            failureThreshold: {{ .failureThreshold }}
          {{- end }}
          {{- end }}
          {{- with $root.Values.probes.liveness }}
          {{- if .enabled }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ .timeoutSeconds }}
            failureThreshold: {{ .failureThreshold }}
          {{- end }}
          {{- end }}
          {{- with $root.Values.probes.readiness }}
          {{- if .enabled }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ .timeoutSeconds }}
            failureThreshold: {{ .failureThreshold }}
          {{- end }}
          {{- end }}
          {{- if gt (int $root.Values.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              exec:
                command: ["/bin/sleep", "{{ int $root.Values.preStopSleepSeconds }}"]
          {{- end }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /run/shenguan
              readOnly: true
            - name: data
              mountPath: /var/lib/shenguan
            - name: tmp
              mountPath: /tmp
            - name: adapters
              mountPath: /etc/shenguan/adapters
              readOnly: true
            - name: catalog
              mountPath: /etc/shenguan/catalog
              readOnly: true
            - name: calendar
              mountPath: /etc/shenguan/calendar
              readOnly: true
            - name: policies
              mountPath: /etc/shenguan/policies
              readOnly: true
            {{- with $root.Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config-base
          configMap:
            name: {{ $fullname }}-config
        {{- if $tokensSecret }}
        - name: tokens
          secret:
            secretName: {{ $tokensSecret }}
            defaultMode: 0440
            items:
              - key: tokens.toml
                path: tokens.toml
        {{- end }}
        - name: config
          emptyDir:
            medium: Memory
            sizeLimit: 1Mi
        - name: data
          {{- if and (not $shared) $root.Values.persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ $root.Values.persistence.existingClaim | default (printf "%s-data" $fullname) }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        - name: tmp
          emptyDir: {}
        - name: adapters
          configMap:
            name: {{ $fullname }}-adapters
            {{- if $adapters }}
            # Each key at its path: <system>/<name>.yaml and <system>/tables/….
            items:
              {{- range $path, $_ := $adapters }}
              - key: {{ include "shenguan.adapterKey" $path }}
                path: {{ $path }}
              {{- end }}
            {{- end }}
        - name: catalog
          configMap:
            name: {{ $fullname }}-catalog
        - name: calendar
          configMap:
            name: {{ $fullname }}-calendar
        - name: policies
          configMap:
            name: {{ $fullname }}-policies
        {{- with $root.Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
