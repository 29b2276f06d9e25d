{{/*
Names, labels and the pieces shared by the Deployment and the migration Job.
*/}}

{{- define "order-process.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or <release> alone when it already contains the chart name.
Kept to 52 characters so that suffixed names (-migrate, -dashboard) stay within 63.
*/}}
{{- define "order-process.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "order-process.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels. The worker's pods are selected by component=worker, so that the migration Job's pods
(component=migrate) are never counted by the Deployment's selector, the Service or the
PodDisruptionBudget.
*/}}
{{- define "order-process.commonLabels" -}}
helm.sh/chart: {{ include "order-process.chart" . }}
app.kubernetes.io/name: {{ include "order-process.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "order-process.selectorLabels" -}}
app.kubernetes.io/name: {{ include "order-process.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "order-process.labels" -}}
{{ include "order-process.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "order-process.migrateLabels" -}}
{{ include "order-process.commonLabels" . }}
app.kubernetes.io/component: migrate
{{- end }}

{{- define "order-process.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The broker is Azure Service Bus (config.broker), and how the worker signs in to it. */}}
{{- define "order-process.serviceBus" -}}
{{- if eq .Values.config.broker "servicebus" }}true{{ end }}
{{- end }}
{{- define "order-process.workloadIdentity" -}}
{{- if and (include "order-process.serviceBus" .) (eq .Values.serviceBus.auth "workloadIdentity") }}true{{ end }}
{{- end }}

{{/*
The worker's service account: created by the chart when serviceAccount.create is true or
workload identity needs one; otherwise serviceAccount.name (empty: the namespace's default).
*/}}
{{- define "order-process.createServiceAccount" -}}
{{- if or .Values.serviceAccount.create (include "order-process.workloadIdentity" .) }}true{{ end }}
{{- end }}
{{- define "order-process.serviceAccountName" -}}
{{- if include "order-process.createServiceAccount" . }}
{{- .Values.serviceAccount.name | default (include "order-process.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the broker's connection string, DATABASE_URL and REDIS_URL: the user's existingSecret, or the one
this chart creates (templates/secret.yaml).
*/}}
{{- define "order-process.secretName" -}}
{{- .Values.connection.existingSecret | default (include "order-process.fullname" .) }}
{{- end }}

{{/*
The Secret the migration Job reads DATABASE_URL from. A pre-install hook runs before the chart's
regular resources exist, so the Job cannot use the chart's Secret: it reads existingSecret (which
the user created beforehand) or a hook Secret of its own (templates/migration-job.yaml).
*/}}
{{- define "order-process.migrationSecretName" -}}
{{- if .Values.connection.existingSecret }}
{{- .Values.connection.existingSecret }}
{{- else }}
{{- printf "%s-migrate" (include "order-process.fullname" .) }}
{{- end }}
{{- end }}

{{/*
A value of .Values.config written the way the binary reads it. YAML numbers reach the templates
as float64, which print with an exponent from 1e+06 on: whole numbers are printed as integers.
Booleans print as true/false, strings as they are.
*/}}
{{- define "order-process.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/* Seconds -> the duration syntax of the binary ("20s"). */}}
{{- define "order-process.drainTimeout" -}}
{{- printf "%ds" (int64 .Values.config.drainTimeoutSeconds) }}
{{- end }}

{{/*
Checks of values that the schema cannot express. Included by the Deployment, so any render fails.
*/}}
{{- define "order-process.validate" -}}
{{- $drain := int64 .Values.config.drainTimeoutSeconds }}
{{- $grace := int64 .Values.terminationGracePeriodSeconds }}
{{- if le $grace $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.drainTimeoutSeconds (%d): Kubernetes kills the pod (SIGKILL) when the grace period ends, so a shorter one cuts the drain of in-flight deliveries short" $grace $drain) }}
{{- end }}
{{- if eq .Values.config.broker "auto" }}
{{- fail "config.broker must be rabbitmq or servicebus: the chart gives the pods the credentials of one broker, so it must know which (the binary's auto is for a shell or a compose file)" }}
{{- end }}
{{- if include "order-process.workloadIdentity" . }}
{{- if not .Values.serviceBus.fullyQualifiedNamespace }}
{{- fail "serviceBus.fullyQualifiedNamespace is required when serviceBus.auth is workloadIdentity (e.g. orders.servicebus.windows.net)" }}
{{- end }}
{{- if not .Values.serviceBus.clientId }}
{{- fail "serviceBus.clientId is required when serviceBus.auth is workloadIdentity: the client id of the identity federated with the worker's service account" }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled (lt (int64 .Values.keda.maxReplicaCount) (int64 .Values.keda.minReplicaCount)) }}
{{- fail "keda.maxReplicaCount must be at least keda.minReplicaCount" }}
{{- end }}
{{- end }}

{{/* A number or a percentage ("50%"), for PodDisruptionBudget fields. */}}
{{- define "order-process.intOrString" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}
