{{/* Labels and the Argo CD sync wave, as manifests/ writes them on every object. */}}
{{- define "switchyard.operatorLabels" -}}
labels: {app.kubernetes.io/name: switchyard-operator, app.kubernetes.io/part-of: switchyard}
annotations: {argocd.argoproj.io/sync-wave: "0"}
{{- end }}

{{- define "switchyard.partOf" -}}
labels: {app.kubernetes.io/part-of: switchyard}
annotations: {argocd.argoproj.io/sync-wave: "0"}
{{- end }}

{{- define "switchyard.natsMeta" -}}
labels: {app.kubernetes.io/name: nats, app.kubernetes.io/part-of: switchyard}
annotations: {argocd.argoproj.io/sync-wave: "0"}
{{- end }}

{{- define "switchyard.operatorImage" -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag }}
{{- end }}

{{/* The ConfigMap name kustomize's configMapGenerator gives nats.conf (name-<hash>), so a
change of the file rolls the pods here too. Same hash: sha256 of the JSON of kind, data
and an empty name (kustomize hashes before it names), 10 hex digits, 0,1,3,a,e -> g,h,k,m,t. */}}
{{- define "switchyard.natsConfigName" -}}
{{- $json := dict "data" (dict "nats.conf" (.Files.Get "files/nats.conf")) "kind" "ConfigMap" "name" "" | toJson -}}
{{- $hash := sha256sum $json | trunc 10 -}}
nats-config-{{ $hash | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" }}
{{- end }}
