{{/*
Helpers. Each documents its input (what `include` is given) and output.
*/}}

{{/*
xchat.name  in: root context  out: chart name (nameOverride), <= 63 chars
*/}}
{{- define "xchat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
xchat.fullname  in: root context  out: <release>-<name> (or fullnameOverride), <= 50 chars
so that "<fullname>-operator-mesh" and friends stay within 63.
*/}}
{{- define "xchat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "xchat.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
xchat.resourceName  in: (dict "ctx" $ "suffix" "operator")  out: <fullname>-<suffix>, <= 63 chars
*/}}
{{- define "xchat.resourceName" -}}
{{- printf "%s-%s" (include "xchat.fullname" .ctx) .suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
xchat.labels  in: (dict "ctx" $ "component" "operator")  out: YAML map of app.kubernetes.io labels
*/}}
{{- define "xchat.labels" -}}
{{ include "xchat.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: xchat
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
xchat.selectorLabels  in: (dict "ctx" $ "component" "operator")  out: immutable selector labels
*/}}
{{- define "xchat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xchat.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
xchat.image  in: root context  out: repository:tag of the xchat image (tag defaults to appVersion)
*/}}
{{- define "xchat.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
xchat.natsImage  in: root context  out: repository:tag of the nats-server image
*/}}
{{- define "xchat.natsImage" -}}
{{- printf "%s:%s" .Values.natsImage.repository .Values.natsImage.tag -}}
{{- end -}}

{{/*
xchat.meshNamespace  in: root context  out: namespace of the XChatMesh
*/}}
{{- define "xchat.meshNamespace" -}}
{{- .Values.mesh.namespace | default .Release.Namespace -}}
{{- end -}}

{{/*
xchat.watchNamespaces  in: root context  out: JSON list of the namespaces the operator watches
(operator.watchNamespaces, else the mesh's namespace); empty list when clusterWide.
*/}}
{{- define "xchat.watchNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
[]
{{- else if .Values.operator.watchNamespaces -}}
{{- .Values.operator.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list (include "xchat.meshNamespace" .) | toJson -}}
{{- end -}}
{{- end -}}

{{/*
xchat.serviceAccountName  in: root context  out: name of the operator's ServiceAccount
*/}}
{{- define "xchat.serviceAccountName" -}}
{{- .Values.operator.serviceAccount.name | default (include "xchat.resourceName" (dict "ctx" . "suffix" "operator")) -}}
{{- end -}}

{{/*
xchat.rbacRules  in: path of a copy of operator/rbac/*.yaml under files/  out: YAML list of the
`rules` of its ClusterRole document, unchanged (the copies are kept identical by sync-from-operator.sh).
*/}}
{{- define "xchat.rbacRules" -}}
{{- $ctx := index . 0 -}}{{- $path := index . 1 -}}
{{- range $doc := regexSplit "(?m)^---\\s*$" ($ctx.Files.Get $path) -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if eq (get $obj "kind") "ClusterRole" -}}
{{- toYaml (get $obj "rules") -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
xchat.loadMergePatch  in: (dict "ctx" $ "file" "files/x.yaml" "merge" {} "patch" [] + any extra keys)
out: the fragment rendered with `tpl` (extra keys reachable as .Values/.extra via $.extra),
then deep-merged with `merge` (maps merge, lists replace), then JSON-patched with `patch`, as YAML.
*/}}
{{- define "xchat.loadMergePatch" -}}
{{- $c := .ctx -}}
{{- $scope := dict "Values" $c.Values "Release" $c.Release "Chart" $c.Chart "Files" $c.Files "Capabilities" $c.Capabilities "Template" $c.Template "extra" (.extra | default dict) -}}
{{- $doc := tpl (.ctx.Files.Get .file) $scope | fromYaml -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "chart bug: %s did not render to YAML: %s" .file (get $doc "Error")) -}}
{{- end -}}
{{- $doc = mergeOverwrite $doc (deepCopy (.merge | default dict)) -}}
{{- range $i, $op := (.patch | default list) -}}
{{- $doc = include "xchat.jsonpatch" (dict "doc" $doc "op" $op "index" $i) | fromJson -}}
{{- end -}}
{{- toYaml $doc -}}
{{- end -}}
