{{/* Names, labels and the RBAC rules shared by the templates. */}}

{{- define "dagflow-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; objects are named after it (at most 55 characters, so suffixes fit). */}}
{{- define "dagflow-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dagflow-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dagflow-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dagflow-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dagflow-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dagflow
{{- end }}

{{- define "dagflow-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dagflow-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dagflow-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "dagflow-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "dagflow-operator.fullname" .) }}
{{- end }}

{{/* The host the webhook is registered at: the Service's DNS name, also the certificate's name. */}}
{{- define "dagflow-operator.webhookHost" -}}
{{- printf "%s.%s.svc" (include "dagflow-operator.webhookServiceName" .) .Release.Namespace }}
{{- end }}

{{- define "dagflow-operator.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "dagflow-operator.fullname" .) }}
{{- end }}

{{/*
Name of the kopf peering object(s). Always used, with one replica too: a second operator on the
cluster (another replica, a rollout overlapping, `make run` beside the release) then stands by.
*/}}
{{- define "dagflow-operator.peeringName" -}}
{{- include "dagflow-operator.fullname" . }}
{{- end }}

{{/*
The operator's name for its webhook configurations (WEBHOOK_CONFIGURATION in dagflow/controller/main.py):
kopf creates and patches them, the operator deletes them on a clean shutdown.
*/}}
{{- define "dagflow-operator.webhookConfigurationName" -}}
dagflow.dev
{{- end }}

{{/*
Permissions in each namespace the operator works in: what kopf watches, what the operator writes.
*/}}
{{- define "dagflow-operator.namespacedRules" -}}
# kopf watches DAGFlows; the operator writes only their status.
- apiGroups: ["dagflow.dev"]
  resources: ["dagflows"]
  verbs: ["list", "watch"]
- apiGroups: ["dagflow.dev"]
  resources: ["dagflows/status"]
  verbs: ["patch"]
# Batch works: created, read back when the name is taken (409), deleted when a run supersedes them.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Serve works: read to check their owner, made and rolled in place by server-side apply (a patch
# that creates needs `create` too), watched to bring back a deleted one, deleted when the work
# leaves the spec or stops serving.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# One Event per work transition (kopf posts core/v1 Events); a Job's FailedCreate Events are
# listed to say why its pods are refused.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
# A batch work succeeds when its pod does: the pods of the operator's Jobs are watched (by its
# label), and a work's outputs are its pod's termination message, listed by the Job's uid. No get,
# no exec, no logs.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# A matrix work's values reach its pods in a ConfigMap, and its instances' outputs are kept in
# another: made, read back (owner checked) when a name is taken or a later work references them,
# watched (only those labelled as the operator's) so that each is deleted once nothing uses it.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete"]
# A run's workspace (spec.workspace): a claim made before the first pod that mounts it, read back
# (owner checked) when its name is taken, and deleted once no run of the kept history uses it.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "delete"]
# Cache entries: looked up by their key's label, written when a cached work succeeds, and deleted
# (listed page by page, now and then) once older than every maxAge of their namespace. Only the
# operator may write them (its webhook and the chart's policy refuse anyone else).
- apiGroups: ["dagflow.dev"]
  resources: ["dagflowcacheentries"]
  verbs: ["list", "create", "delete"]
# Kueue (when installed): the Workloads of a flow's queued Jobs are listed by Job uid to tell why a
# work waits, and deactivated (spec.active) while the flow is suspended or held behind older flows'
# works (read again just before); the Jobs stay Kueue's to suspend and unsuspend.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "patch"]
# The webhook refuses a flow that names a LocalQueue that does not exist; flows are kept in order
# per ClusterQueue, which a LocalQueue names.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["localqueues"]
  verbs: ["get"]
{{- end }}

{{/* Cluster-scoped permissions needed in every mode. */}}
{{- define "dagflow-operator.clusterRules" -}}
# Kueue (when installed): a queued Job's priority before Kueue made its Workload, to keep flows in
# order within a priority; and a ClusterQueue's free quota, so that a flow's next stage keeps the
# quota its running works free.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloadpriorityclasses", "clusterqueues"]
  verbs: ["get"]
# kopf lists the CRDs to find the resources it serves, and watches them for changes.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.webhook.enabled }}
# The chart makes the operator's ValidatingWebhookConfiguration; the operator only reads it and
# patches its webhooks and CA bundle into it. It may create no webhook configuration (a `create`
# cannot be limited to a name) and delete none: the configuration stays while it is down.
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingwebhookconfigurations"]
  resourceNames: [{{ include "dagflow-operator.webhookConfigurationName" . | quote }}]
  verbs: ["get", "patch"]
# The webhook asks the API server whether a flow's author may create what the operator would create
# for the flow (SubjectAccessReview), as the chart's ValidatingAdmissionPolicy does.
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end }}
{{- end }}

{{/* kopf peering: watch the peering objects, patch our own with keep-alives, and read it on the
way out (a replica leaves the webhook configuration in place while a peer lives). */}}
{{- define "dagflow-operator.peeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ .resource | quote }}]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: [{{ .resource | quote }}]
  resourceNames: [{{ .name | quote }}]
  verbs: ["get", "patch"]
{{- end }}

{{/* The RBAC verb on dagflows that approving and rejecting a gate needs. */}}
{{- define "dagflow-operator.approveVerb" -}}
approve
{{- end }}
