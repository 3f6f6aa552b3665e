{{/* Labels every object carries; the selector ones pick the agent's pods. */}}
{{- define "nri-sysflow.selectorLabels" -}}
app.kubernetes.io/name: nri-sysflow
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nri-sysflow.labels" -}}
{{ include "nri-sysflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The image, pinned by digest when one is given. */}}
{{- define "nri-sysflow.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* Rules files the ConfigMap carries, by name. */}}
{{- define "nri-sysflow.ruleFiles" -}}
{{- $files := list -}}
{{- if .Values.rules.shipped }}{{ $files = append $files "runtime.yaml" }}{{ end -}}
{{- range $name, $_ := .Values.rules.extra }}{{ $files = append $files $name }}{{ end -}}
{{- toJson $files -}}
{{- end }}

{{/* agent.yaml: what the chart's mounts and ports need, with .Values.config over it. */}}
{{- define "nri-sysflow.agentConfig" -}}
{{- $config := dict
  "output" (dict "dir" "/var/lib/nri-sysflow")
  "capture" (dict "policy" "/etc/nri-sysflow/policy/policy.yaml")
  "metrics" (dict "addr" (printf "0.0.0.0:%d" (int .Values.metrics.port)))
  "host" (dict "proc" "/proc" "cgroup" nil) -}}
{{- if fromJsonArray (include "nri-sysflow.ruleFiles" .) }}
{{- $_ := set $config "detection" (dict "rules" (list "/etc/nri-sysflow/rules")) }}
{{- end }}
{{- if .Values.export.enabled }}
{{- $export := dict "url" (required "export.url is required when export.enabled" .Values.export.url) "create_bucket" .Values.export.createBucket "formats" .Values.export.formats }}
{{- with .Values.export.endpoint }}{{ $_ := set $export "endpoint" . }}{{ end }}
{{- with .Values.export.region }}{{ $_ := set $export "region" . }}{{ end }}
{{- with .Values.export.cluster }}{{ $_ := set $export "cluster" . }}{{ end }}
{{- $_ := set $config "export" $export }}
{{- end }}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.config)) }}
{{- end }}
