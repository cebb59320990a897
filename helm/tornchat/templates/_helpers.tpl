{{/*
Expand the name of the chart.
*/}}
{{- define "tornchat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "tornchat.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "tornchat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object of the release; no component, so hook and test
pods can carry them without being selected by the Service or the PDB.
*/}}
{{- define "tornchat.commonLabels" -}}
helm.sh/chart: {{ include "tornchat.chart" . }}
app.kubernetes.io/name: {{ include "tornchat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Common labels of the server's objects.
*/}}
{{- define "tornchat.labels" -}}
{{ include "tornchat.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Selector labels: the server pods only (not the migration Job or test pods).
*/}}
{{- define "tornchat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tornchat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "tornchat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tornchat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The tornchat image reference.
*/}}
{{- define "tornchat.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the Secret holding ACCESS_TOKEN_SECRET / DATABASE_URL / REDIS_URL.
*/}}
{{- define "tornchat.secretName" -}}
{{- default (include "tornchat.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
"true" when no database URL is configured anywhere: the pod then keeps a
SQLite file in an emptyDir, which only works for a single pod.
*/}}
{{- define "tornchat.sqlite" -}}
{{- if and (not .Values.existingSecret) (not .Values.secret.databaseUrl) }}true{{ end }}
{{- end }}

{{/*
ACCESS_TOKEN_SECRET: the configured value, else the one already stored in the
release's Secret (so upgrades keep it), else a new random one.
*/}}
{{- define "tornchat.accessTokenSecret" -}}
{{- if .Values.secret.accessTokenSecret }}
{{- .Values.secret.accessTokenSecret }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tornchat.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "ACCESS_TOKEN_SECRET") }}
{{- index $existing.data "ACCESS_TOKEN_SECRET" | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when messages must cross pods or processes: autoscaling, more than one
replica, or more than one worker process per pod.
*/}}
{{- define "tornchat.scaled" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) (ne (int .Values.server.processes) 1) }}true{{ end }}
{{- end }}

{{/*
Cross-field checks that values.schema.json cannot express; rendering fails
with a message naming the values to change.
*/}}
{{- define "tornchat.validate" -}}
{{- $s := .Values.server }}
{{- /* with several processes the supervisor gives the workers 2 s more than the drain */ -}}
{{- $needed := add (int $s.preStopSleepSeconds) (int $s.shutdownTimeoutSeconds) (ternary 0 2 (eq (int $s.processes) 1)) }}
{{- if le (int $s.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "server.terminationGracePeriodSeconds (%d) must be greater than server.preStopSleepSeconds + server.shutdownTimeoutSeconds (+ 2 with several processes) (%d)" (int $s.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- if eq (int $s.healthPort) (int $s.port) }}
{{- fail (printf "server.healthPort (%d) must differ from server.port, or be 0 (off)" (int $s.healthPort)) }}
{{- end }}
{{- if not (int $s.healthPort) }}
{{- range $name := list "startupProbe" "readinessProbe" "livenessProbe" }}
{{- $probe := index $.Values $name | default dict }}
{{- range $kind := list "httpGet" "tcpSocket" "grpc" }}
{{- if eq (toString (dig $kind "port" "" $probe)) "health" }}
{{- fail (printf "server.healthPort is 0, so there is no port named health: set %s.%s.port to http" $name $kind) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $scaled := include "tornchat.scaled" . }}
{{- if and $scaled (include "tornchat.sqlite" .) }}
{{- fail "several pods or processes need a shared database: set secret.databaseUrl or existingSecret (SQLite in an emptyDir is for a single pod only)" }}
{{- end }}
{{- if and $scaled (not .Values.existingSecret) (not .Values.secret.redisUrl) }}
{{- fail "several pods or processes need Redis for message fan-out: set secret.redisUrl (or provide REDIS_URL in existingSecret)" }}
{{- end }}
{{- end }}

{{/*
Environment shared by the server, the migration Job and init container.
*/}}
{{- define "tornchat.envFrom" -}}
- configMapRef:
    name: {{ include "tornchat.fullname" . }}
- secretRef:
    name: {{ include "tornchat.secretName" . }}
{{- end }}
