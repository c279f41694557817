{{/*
Names
*/}}
{{- define "myapp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "myapp.fullname" -}}
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

{{/*
Name of a per-component object, e.g. "<fullname>-web".
Usage: include "myapp.componentName" (dict "root" $ "component" "web")
*/}}
{{- define "myapp.componentName" -}}
{{- printf "%s-%s" (include "myapp.fullname" .root | trunc 52 | trimSuffix "-") .component }}
{{- end }}

{{- define "myapp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels
*/}}
{{- define "myapp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "myapp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "myapp.labels" -}}
helm.sh/chart: {{ include "myapp.chart" . }}
{{ include "myapp.selectorLabels" . }}
app.kubernetes.io/version: {{ include "myapp.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Usage: include "myapp.componentSelectorLabels" (dict "root" $ "component" "web") */}}
{{- define "myapp.componentSelectorLabels" -}}
{{ include "myapp.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Usage: include "myapp.componentLabels" (dict "root" $ "component" "web") */}}
{{- define "myapp.componentLabels" -}}
{{ include "myapp.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Image
*/}}
{{- define "myapp.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{- define "myapp.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "myapp.imageTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "myapp.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Service account used by the Deployments.
*/}}
{{- define "myapp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "myapp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Configuration and secrets
*/}}

{{/* An env value as a string; whole numbers never turn into 1e+07. */}}
{{- define "myapp.envString" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The same, quoted for YAML. */}}
{{- define "myapp.envValue" -}}
{{- include "myapp.envString" . | quote }}
{{- end }}

{{/* ConfigMap data: non-empty entries of .Values.config. */}}
{{- define "myapp.configData" -}}
{{- range $key, $value := .Values.config }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{ $key }}: {{ include "myapp.envValue" $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret data (base64): non-empty entries of .Values.secret.data. */}}
{{- define "myapp.secretData" -}}
{{- range $key, $value := .Values.secret.data }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{ $key }}: {{ include "myapp.envString" $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* True ("true") when the chart renders the Secret itself. */}}
{{- define "myapp.secretManaged" -}}
{{- if and (not .Values.secret.existingSecret) .Values.secret.create }}true{{ end }}
{{- end }}

{{/* Name of the Secret the pods read, or "" when there is none. */}}
{{- define "myapp.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else if .Values.secret.create }}
{{- include "myapp.fullname" . }}
{{- end }}
{{- end }}

{{/* Fails the render when a required secret key is missing. */}}
{{- define "myapp.validateSecret" -}}
{{- if include "myapp.secretManaged" . }}
{{- range .Values.secret.required }}
{{- if eq (toString (get $.Values.secret.data .)) "" }}
{{- fail (printf "secret.data.%s is required (or set secret.existingSecret to a Secret you manage)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod building blocks
*/}}

{{/* Checksums that roll every pod when the configuration changes. */}}
{{- define "myapp.checksumAnnotations" -}}
checksum/config: {{ include "myapp.configData" . | sha256sum | quote }}
{{- if include "myapp.secretManaged" . }}
checksum/secret: {{ include "myapp.secretData" . | sha256sum | quote }}
{{- end }}
{{- end }}

{{/*
Container environment: envFrom the ConfigMap and Secret, then role overrides.
Usage: include "myapp.containerEnv" (dict "root" $ "role" $role "configMap" "name" "secret" "name")
*/}}
{{- define "myapp.containerEnv" -}}
envFrom:
  - configMapRef:
      name: {{ .configMap }}
{{- if .secret }}
  - secretRef:
      name: {{ .secret }}
{{- end }}
{{- $env := get .role "env" | default dict }}
{{- if or $env .root.Values.extraEnv }}
env:
{{- range $key, $value := $env }}
  - name: {{ $key }}
    value: {{ include "myapp.envValue" $value }}
{{- end }}
{{- with .root.Values.extraEnv }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Effective value of a config key for a role (role env wins). */}}
{{- define "myapp.roleConfig" -}}
{{- $env := get .role "env" | default dict }}
{{- if hasKey $env .key }}
{{- include "myapp.envString" (get $env .key) }}
{{- else }}
{{- include "myapp.envString" (get .root.Values.config .key) }}
{{- end }}
{{- end }}
