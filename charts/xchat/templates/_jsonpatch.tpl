{{/*
A small RFC 6902 JSON patch for the `patch` key of every resource block.

xchat.jsonpatch  in: (dict "doc" <map> "op" {op, path, value} "index" <n>)
out: the patched document as JSON. Supports op add, replace and remove; paths
are JSON pointers ("/spec/template/spec/containers/0/args/-"), "~1" is "/" and
"~0" is "~" inside a token, "-" appends to a list. Anything else fails the
render with a message naming the patch entry.
*/}}
{{- define "xchat.jsonpatch" -}}
{{- $op := .op -}}
{{- if not (and (kindIs "map" $op) (hasKey $op "op") (hasKey $op "path")) -}}
{{- fail (printf "patch[%d] must be a map with op and path (RFC 6902), got %v" .index $op) -}}
{{- end -}}
{{- if not (has $op.op (list "add" "replace" "remove")) -}}
{{- fail (printf "patch[%d]: op %q is not supported (add, replace, remove)" .index $op.op) -}}
{{- end -}}
{{- if not (hasPrefix "/" $op.path) -}}
{{- fail (printf "patch[%d]: path %q must start with /" .index $op.path) -}}
{{- end -}}
{{- $tokens := list -}}
{{- range (rest (splitList "/" $op.path)) -}}
{{- $tokens = append $tokens (. | replace "~1" "/" | replace "~0" "~") -}}
{{- end -}}
{{- $out := dict -}}
{{- $_ := include "xchat.jsonpatch.at" (dict "node" .doc "tokens" $tokens "op" $op "index" .index "out" $out) -}}
{{- toJson $out.result -}}
{{- end -}}

{{/*
xchat.jsonpatch.at  in: (dict "node" <map|list> "tokens" <list> "op" .. "index" .. "out" <dict>)
out: sets out.result to the new node (maps are changed in place, lists are rebuilt).
*/}}
{{- define "xchat.jsonpatch.at" -}}
{{- $node := .node -}}{{- $tok := first .tokens -}}{{- $rest := rest .tokens -}}
{{- $where := printf "patch[%d] (%s %s)" .index .op.op .op.path -}}
{{- if kindIs "map" $node -}}
  {{- if $rest -}}
    {{- if not (hasKey $node $tok) -}}{{- fail (printf "%s: no key %q" $where $tok) -}}{{- end -}}
    {{- $sub := dict -}}
    {{- $_ := include "xchat.jsonpatch.at" (dict "node" (get $node $tok) "tokens" $rest "op" .op "index" .index "out" $sub) -}}
    {{- $_ := set $node $tok $sub.result -}}
  {{- else if eq .op.op "remove" -}}
    {{- if not (hasKey $node $tok) -}}{{- fail (printf "%s: no key %q to remove" $where $tok) -}}{{- end -}}
    {{- $_ := unset $node $tok -}}
  {{- else -}}
    {{- if and (eq .op.op "replace") (not (hasKey $node $tok)) -}}{{- fail (printf "%s: no key %q to replace" $where $tok) -}}{{- end -}}
    {{- $_ := set $node $tok .op.value -}}
  {{- end -}}
  {{- $_ := set .out "result" $node -}}
{{- else if kindIs "slice" $node -}}
  {{- $n := len $node -}}
  {{- $i := $n -}}
  {{- if ne $tok "-" -}}
    {{- if not (regexMatch "^[0-9]+$" $tok) -}}{{- fail (printf "%s: %q is not a list index" $where $tok) -}}{{- end -}}
    {{- $i = atoi $tok -}}
  {{- end -}}
  {{- $new := list -}}
  {{- if $rest -}}
    {{- if ge $i $n -}}{{- fail (printf "%s: index %d out of range" $where $i) -}}{{- end -}}
    {{- $sub := dict -}}
    {{- $_ := include "xchat.jsonpatch.at" (dict "node" (index $node $i) "tokens" $rest "op" .op "index" .index "out" $sub) -}}
    {{- range $j, $v := $node -}}{{- $new = append $new (ternary $sub.result $v (eq $j $i)) -}}{{- end -}}
  {{- else if eq .op.op "add" -}}
    {{- if gt $i $n -}}{{- fail (printf "%s: index %d out of range" $where $i) -}}{{- end -}}
    {{- range $j, $v := $node -}}{{- if eq $j $i -}}{{- $new = append $new $.op.value -}}{{- end -}}{{- $new = append $new $v -}}{{- end -}}
    {{- if eq $i $n -}}{{- $new = append $new .op.value -}}{{- end -}}
  {{- else -}}
    {{- if ge $i $n -}}{{- fail (printf "%s: index %d out of range" $where $i) -}}{{- end -}}
    {{- range $j, $v := $node -}}
      {{- if ne $j $i -}}{{- $new = append $new $v -}}{{- else if eq $.op.op "replace" -}}{{- $new = append $new $.op.value -}}{{- end -}}
    {{- end -}}
  {{- end -}}
  {{- $_ := set .out "result" $new -}}
{{- else -}}
  {{- fail (printf "%s: cannot descend into a %s" $where (kindOf $node)) -}}
{{- end -}}
{{- end -}}
