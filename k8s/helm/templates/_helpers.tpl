{{- define "picolytics.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "picolytics.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "picolytics.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "picolytics.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "picolytics.selectorLabels" -}}
app.kubernetes.io/name: {{ include "picolytics.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "picolytics.databaseHost" -}}
{{- if .Values.database.host -}}
{{- .Values.database.host -}}
{{- else if .Values.postgresql.enabled -}}
{{- printf "%s-postgresql" (include "picolytics.fullname" .) -}}
{{- else -}}
{{- fail "set database.host (external PostgreSQL) or postgresql.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* TRUSTED_PROXIES: required whenever forwarded headers are believed (values.yaml). */}}
{{- define "picolytics.trustedProxies" -}}
{{- if hasKey .Values.config "TRUSTED_PROXIES" -}}
{{- fail "set trustedProxies, not config.TRUSTED_PROXIES" -}}
{{- end -}}
{{- $extractor := .Values.config.IP_EXTRACTOR | default "direct" | lower -}}
{{- if and (ne $extractor "direct") (not .Values.trustedProxies) -}}
{{- fail (printf "set trustedProxies to your ingress controller's CIDR ranges (config.IP_EXTRACTOR is %s)" $extractor) -}}
{{- end -}}
{{- join "," .Values.trustedProxies -}}
{{- end -}}
