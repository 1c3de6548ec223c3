{{/*
xchat.validate  in: root context  out: nothing; fails the render with a readable message
for rules values.schema.json cannot express (they mirror the CRD's CEL rules, so a bad
mesh is refused by `helm install` before the API server sees it).
*/}}
{{- define "xchat.validate" -}}
{{- $m := .Values.mesh -}}
{{- if $m.enabled -}}
  {{- $names := list -}}
  {{- range $m.regions -}}
    {{- if has .name $names -}}
      {{- fail (printf "mesh.regions: region name %q appears twice; region names must be unique" .name) -}}
    {{- end -}}
    {{- $names = append $names .name -}}
  {{- end -}}
  {{- if gt (int $m.durability.replicas) (len $m.regions) -}}
    {{- fail (printf "mesh.durability.replicas=%d cannot exceed the number of regions (%d): every replica sits in a different region" (int $m.durability.replicas) (len $m.regions)) -}}
  {{- end -}}
  {{- $first := (index $m.regions 0).natsNodes | default 1 | int -}}
  {{- range $m.regions -}}
    {{- if ne (.natsNodes | default 1 | int) $first -}}
      {{- fail (printf "mesh.regions: region %q runs %d NATS nodes but %q runs %d; every region must run the same number (natsNodes), or losing one region can halt the JetStream meta group" .name (.natsNodes | default 1 | int) (index $m.regions 0).name $first) -}}
    {{- end -}}
  {{- end -}}
  {{- if and .Values.operator.enabled (not .Values.operator.clusterWide) -}}
    {{- $ns := include "xchat.meshNamespace" . -}}
    {{- if not (has $ns (include "xchat.watchNamespaces" . | fromJsonArray)) -}}
      {{- fail (printf "operator.watchNamespaces %v does not include the mesh's namespace %q: the operator would never see the mesh" .Values.operator.watchNamespaces $ns) -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- end -}}
