{{/* Probes and PodDisruptionBudgets of the components (docs/deployment.md "Probes" and
     "Disruption budgets"). */}}

{{/* One probe, called with (dict "probe" <override> "handler" <dict> "timing" <dict>): the override
     (<component>.livenessProbe/readinessProbe) replaces the default when set; otherwise the chart's
     handler with the timing from <component>.probes. Renders nothing when both are empty. */}}
{{- define "vkec2.probe" -}}
{{- if .probe }}
{{- toYaml .probe }}
{{- else if .timing }}
{{- toYaml (merge (deepCopy .handler) .timing) }}
{{- end }}
{{- end }}

{{/* The liveness and readiness probes of a container, called with (dict "values" <component values>
     "liveness" <handler> "readiness" <handler>), indented for a container. */}}
{{- define "vkec2.probes" -}}
{{- $p := .values.probes | default dict }}
{{- $on := $p.enabled }}
{{- with (include "vkec2.probe" (dict "probe" .values.livenessProbe "handler" .liveness "timing" (ternary $p.liveness dict (and $on (hasKey $p "liveness"))))) }}
livenessProbe:
  {{- . | nindent 2 }}
{{- end }}
{{- with (include "vkec2.probe" (dict "probe" .values.readinessProbe "handler" .readiness "timing" (ternary $p.readiness dict (and $on (hasKey $p "readiness"))))) }}
readinessProbe:
  {{- . | nindent 2 }}
{{- end }}
{{- end }}

{{/* `celery inspect ping` of this pod's own worker (its node name is celery@<pod hostname>). */}}
{{- define "vkec2.workerPing" -}}
exec:
  command:
    - sh
    - -c
    - exec celery -A tasks inspect ping --destination "celery@${HOSTNAME}" --timeout {{ .Values.worker.probes.pingTimeoutSeconds }}
{{- end }}

{{/* Beat: it loads its configuration and reaches its Redis (RedBeat's lock and schedule live there). */}}
{{- define "vkec2.beatCheck" -}}
exec:
  command:
    - python
    - -c
    - "from vkec2.config import load_settings; from vkec2.store.redis_store import Store; Store.from_settings(load_settings()).redis.ping()"
{{- end }}

{{/* A PodDisruptionBudget, called with (dict "ctx" $ "component" "worker" "pdb" <values>
     "replicas" <n>): rendered when enabled and the workload has replicas. */}}
{{- define "vkec2.pdb" -}}
{{- $pdb := .pdb }}
{{- if and $pdb $pdb.enabled (gt (int .replicas) 0) }}
{{- if and (ne (toString $pdb.minAvailable) "<nil>") (ne (toString $pdb.maxUnavailable) "<nil>") }}
{{- fail (printf "%s.pdb: set minAvailable or maxUnavailable, not both" .component) }}
{{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "vkec2.fullname" .ctx }}-{{ .component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "vkec2.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  {{- if ne (toString $pdb.minAvailable) "<nil>" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ ternary $pdb.maxUnavailable 1 (ne (toString $pdb.maxUnavailable) "<nil>") }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "vkec2.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
{{- end }}
