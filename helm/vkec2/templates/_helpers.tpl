{{/*
Names, labels and the pieces shared by the vkec2 workloads.
*/}}

{{- define "vkec2.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix, at most 45 characters so "<prefix>-producer-<ordinal>" and the
     "-flower-auth" style suffixes stay valid names. */}}
{{- define "vkec2.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vkec2.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "ctx" $ "component" "worker"). */}}
{{- define "vkec2.labels" -}}
helm.sh/chart: {{ include "vkec2.chart" .ctx }}
{{ include "vkec2.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: vkec2
{{- end }}

{{- define "vkec2.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vkec2.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "vkec2.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vkec2.producerServiceAccount" -}}
{{- default (printf "%s-producer" (include "vkec2.fullname" .)) .Values.serviceAccounts.producer.name }}
{{- end }}

{{- define "vkec2.workerServiceAccount" -}}
{{- default (printf "%s-worker" (include "vkec2.fullname" .)) .Values.serviceAccounts.worker.name }}
{{- end }}

{{- define "vkec2.supportServiceAccount" -}}
{{- default (printf "%s-support" (include "vkec2.fullname" .)) .Values.serviceAccounts.support.name }}
{{- end }}

{{- define "vkec2.flowerAuthSecret" -}}
{{- default (printf "%s-flower-auth" (include "vkec2.fullname" .)) .Values.flower.basicAuth.secretName }}
{{- end }}

{{- define "vkec2.sealingSecret" -}}
{{- default (printf "%s-sealing" (include "vkec2.fullname" .)) .Values.sealing.existingSecret }}
{{- end }}

{{/* The Fernet keys sealing pods' ConfigMap/Secret content in Redis: producer and workers only. */}}
{{- define "vkec2.sealingEnv" -}}
- name: VKEC2_SECRETS__KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "vkec2.sealingSecret" . }}
      key: {{ .Values.sealing.key }}
{{- end }}

{{- define "vkec2.fleetCASecret" -}}
{{- default (printf "%s-fleet-ca" (include "vkec2.fullname" .)) .Values.agentTls.secretName }}
{{- end }}

{{- define "vkec2.producerClientSecret" -}}
{{- default (printf "%s-producer-tls" (include "vkec2.fullname" .)) .Values.agentTls.producerSecretName }}
{{- end }}

{{- define "vkec2.redisAuthSecret" -}}
{{- default (printf "%s-redis-auth" (include "vkec2.fullname" .)) .Values.redis.bundled.auth.existingSecret }}
{{- end }}

{{/* The configuration file: the user's `config` plus the keys the chart owns. */}}
{{- define "vkec2.config" -}}
{{- $node := dict "os" .Values.nodeOS "kubelet_port" (int .Values.producer.kubeletPort) }}
{{- $config := mustMergeOverwrite (deepCopy (default (dict) .Values.config)) (dict "node" $node) }}
{{- toYaml $config }}
{{- end }}

{{/* Fails with a clear message on value combinations the schema cannot express. */}}
{{- define "vkec2.validate" -}}
{{- $r := .Values.redis }}
{{- if and $r.url $r.existingSecret.name }}
{{- fail "redis: set either redis.url or redis.existingSecret.name, not both" }}
{{- end }}
{{- if and $r.bundled.enabled (or $r.url $r.existingSecret.name) }}
{{- fail "redis: redis.bundled.enabled is true but an external Redis is configured too; set redis.bundled.enabled=false to use it" }}
{{- end }}
{{- if not (or $r.bundled.enabled $r.url $r.existingSecret.name) }}
{{- fail "redis: no Redis configured; set redis.url (or redis.existingSecret.name), or redis.bundled.enabled=true to try vkec2 out" }}
{{- end }}
{{- $c := default (dict) .Values.config }}
{{- if hasKey $c "redis_url" }}
{{- fail "config.redis_url: set redis.url or redis.existingSecret instead (the URL holds the Redis password and is kept in a Secret)" }}
{{- end }}
{{- $agent := default (dict) (get $c "agent") }}
{{- if and (kindIs "map" $agent) (hasKey $agent "tls") }}
{{- fail "config.agent.tls: set agentTls.secretName instead (the chart mounts the fleet CA into the workers and points agent.tls at it)" }}
{{- end }}
{{- if and (kindIs "map" $agent) (hasKey $agent "insecure_plaintext") }}
{{- fail "config.agent.insecure_plaintext: set agentTls.insecurePlaintext instead (the chart then creates no fleet CA)" }}
{{- end }}
{{- if and .Values.agentTls.insecurePlaintext (or .Values.agentTls.secretName .Values.agentTls.producerSecretName .Values.agentTls.certManager.enabled) }}
{{- fail "agentTls.insecurePlaintext is true but agentTls.secretName, producerSecretName or certManager.enabled is set too; remove one of them" }}
{{- end }}
{{- if and .Values.agentTls.certManager.enabled .Values.agentTls.secretName }}
{{- fail "agentTls.certManager.enabled makes the fleet CA into <fullname>-fleet-ca; leave agentTls.secretName empty (or disable certManager to bring your own CA)" }}
{{- end }}
{{- $node := default (dict) (get $c "node") }}
{{- if kindIs "map" $node }}
{{- if and (hasKey $node "os") (ne (toString (get $node "os")) (toString .Values.nodeOS)) }}
{{- fail (printf "config.node.os (%v) contradicts nodeOS (%v); set nodeOS only" (get $node "os") .Values.nodeOS) }}
{{- end }}
{{- if and (hasKey $node "kubelet_port") (ne (int (get $node "kubelet_port")) (int .Values.producer.kubeletPort)) }}
{{- fail (printf "config.node.kubelet_port (%v) contradicts producer.kubeletPort (%v); set producer.kubeletPort only" (get $node "kubelet_port") .Values.producer.kubeletPort) }}
{{- end }}
{{- if and (get $node "name") (gt (int .Values.producer.replicas) 1) }}
{{- fail (printf "config.node.name is set, so all %d producer replicas would register the same node; remove it (each replica is named <cluster_name>-<ordinal>) or set producer.replicas=1" (int .Values.producer.replicas)) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.producer.kubeletPort)) }}
{{- fail "metrics.port and producer.kubeletPort must differ (both are ports of the producer pod)" }}
{{- end }}
{{- end }}

{{/* Environment shared by every vkec2 container: the config file and the Redis URL. */}}
{{- define "vkec2.commonEnv" -}}
- name: VKEC2_CONFIG
  value: /etc/vkec2/config/config.yaml
{{- if .Values.redis.bundled.enabled }}
# The bundled Redis's password, from its Secret; the URL refers to it ($(...) is expanded by the kubelet).
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "vkec2.redisAuthSecret" . }}
      key: {{ .Values.redis.bundled.auth.key }}
- name: VKEC2_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s-redis:6379/0" (include "vkec2.fullname" .) | quote }}
{{- else }}
- name: VKEC2_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-redis" (include "vkec2.fullname" .)) .Values.redis.existingSecret.name }}
      key: {{ if .Values.redis.existingSecret.name }}{{ .Values.redis.existingSecret.key }}{{ else }}redis-url{{ end }}
{{- end }}
- name: PYTHONUNBUFFERED
  value: "1"
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vkec2.metricsEnv" -}}
{{- if .Values.metrics.enabled -}}
- name: VKEC2_METRICS__PORT
  value: {{ .Values.metrics.port | quote }}
# All interfaces of the pod: Prometheus scrapes the pod IP (the default 127.0.0.1 is unreachable).
- name: VKEC2_METRICS__ADDRESS
  value: "0.0.0.0"
{{- end }}
{{- end }}

{{/* Volumes of every vkec2 pod: the configuration and a writable /tmp. */}}
{{- define "vkec2.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "vkec2.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "vkec2.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/vkec2/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Annotations that roll the pods when the configuration changes. */}}
{{- define "vkec2.podAnnotations" -}}
checksum/config: {{ include "vkec2.config" . | sha256sum }}
{{- end }}

{{- define "vkec2.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* agent.tls of one component, called with (dict "ctx" $ "component" "worker"): the workers get
     the fleet CA with its key (they sign the agents' certificates), the producer its own client
     certificate and the CA certificate, beat and Flower the CA certificate only (they dial no agent,
     but share the configuration rule that refuses plaintext agents). */}}
{{- define "vkec2.agentTlsEnv" -}}
{{- if .ctx.Values.agentTls.insecurePlaintext }}
- name: VKEC2_AGENT__INSECURE_PLAINTEXT
  value: "true"
{{- else }}
{{- $tls := dict "ca_cert_file" "/etc/vkec2/ca/ca.crt" }}
{{- if eq .component "worker" }}
{{- $_ := set $tls "ca_key_file" "/etc/vkec2/ca/ca.key" }}
{{- else if eq .component "producer" }}
{{- $tls = dict "ca_cert_file" "/etc/vkec2/agent-client/ca.crt" "client_cert_file" "/etc/vkec2/agent-client/tls.crt" "client_key_file" "/etc/vkec2/agent-client/tls.key" }}
{{- end }}
- name: VKEC2_AGENT__TLS
  value: {{ $tls | toJson | quote }}
{{- end }}
{{- end }}

{{- define "vkec2.agentTlsMounts" -}}
{{- if not .ctx.Values.agentTls.insecurePlaintext }}
- name: {{ if eq .component "producer" }}agent-client{{ else }}fleet-ca{{ end }}
  mountPath: {{ if eq .component "producer" }}/etc/vkec2/agent-client{{ else }}/etc/vkec2/ca{{ end }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "vkec2.agentTlsVolumes" -}}
{{- $v := .ctx.Values.agentTls }}
{{- if not $v.insecurePlaintext }}
{{- if eq .component "producer" }}
- name: agent-client
  secret:
    secretName: {{ include "vkec2.producerClientSecret" .ctx }}
    defaultMode: 0400
    items:
      - {key: ca.crt, path: ca.crt}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- else }}
- name: fleet-ca
  secret:
    secretName: {{ include "vkec2.fleetCASecret" .ctx }}
    defaultMode: {{ if eq .component "worker" }}0400{{ else }}0444{{ end }}
    items:
      - {key: {{ $v.certKey | quote }}, path: ca.crt}
      {{- if eq .component "worker" }}
      - {key: {{ $v.keyKey | quote }}, path: ca.key}
      {{- end }}
{{- end }}
{{- end }}
{{- end }}
