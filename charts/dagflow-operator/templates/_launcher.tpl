{{/*
How matrix works' pods get the launcher (DAGFLOW_LAUNCHER_DELIVERY): `launcher.delivery` when it names
one, else (`auto`) what the cluster's nodes allow when the chart is installed or upgraded.
*/}}
{{- define "dagflow-operator.launcherDelivery" -}}
{{- if ne .Values.launcher.delivery "auto" }}
{{- .Values.launcher.delivery }}
{{- else }}
{{- /* Empty without a cluster (helm template, a client-side dry run): the init container then. */}}
{{- $nodes := (lookup "v1" "Node" "" "").items | default list }}
{{- $context := dict "nodes" $nodes "kubeVersion" .Capabilities.KubeVersion.Version }}
{{- ternary "imageVolume" "initContainer" (eq (include "dagflow-operator.imageVolumesEverywhere" $context) "true") }}
{{- end }}
{{- end }}

{{/*
"true" when every node can mount an image volume: the API server serves the `image` volume source on
by default (Kubernetes 1.35 and later; GA in 1.36) and every node's runtime mounts it (containerd 2.1
and later, CRI-O 1.31 and later, as each node reports in status.nodeInfo.containerRuntimeVersion).
A cluster with no node, or one node whose runtime is older, unknown or unreadable, gets "false": a
pod with an image volume would never start there. Takes a dict: nodes (Node objects), kubeVersion.
*/}}
{{- define "dagflow-operator.imageVolumesEverywhere" -}}
{{- $everywhere := and (semverCompare ">=1.35.0-0" .kubeVersion) (gt (len .nodes) 0) }}
{{- range .nodes }}
{{- $runtime := (.status | default dict).nodeInfo | default dict }}
{{- $runtime = $runtime.containerRuntimeVersion | default "" | toString }}
{{- $name := regexReplaceAll "://.*$" $runtime "" }}
{{- /* Only major.minor(.patch): distributions add suffixes that are not semantic versions. */}}
{{- $version := regexFind "^v?[0-9]+\\.[0-9]+(\\.[0-9]+)?" (regexReplaceAll "^[^:]*://" $runtime "") | trimPrefix "v" }}
{{- $least := get (dict "containerd" "2.1.0" "cri-o" "1.31.0") $name }}
{{- if or (not $version) (not $least) }}
{{- $everywhere = false }}
{{- else if not (semverCompare (printf ">=%s" $least) $version) }}
{{- $everywhere = false }}
{{- end }}
{{- end }}
{{- $everywhere }}
{{- end }}
