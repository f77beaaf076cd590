{{- /* Mutual TLS between kube-scheduler and the extender (scheduler.extender.tls.enabled). */}}

{{- define "muster.extenderTLSSecret" -}}{{ include "muster.schedulerName" . }}-extender-tls{{- end }}

{{- /* Where both containers mount their part of the Secret. */}}
{{- define "muster.extenderTLSDir" -}}/etc/muster-tls{{- end }}

{{- /* The Secret's data (base64 values, YAML): the installed Secret's when it holds every file
(upgrades keep the certificates), else a new CA, the extender's serving certificate (127.0.0.1,
localhost and the Service's names) and kube-scheduler's client certificate. Generated once per
render and shared by every template (the Secret and the pod's checksum), so both see the same
certificates. The CA's private key is not kept. */}}
{{- define "muster.extenderTLSData" -}}
{{- $tls := .Values.scheduler.extender.tls }}
{{- if not (hasKey $tls "_rendered") }}
{{- $files := list "ca.crt" "tls.crt" "tls.key" "client.crt" "client.key" }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "muster.extenderTLSSecret" .) | default dict }}
{{- $old := dig "data" dict $secret }}
{{- $complete := true }}
{{- range $files }}
{{- if not (get $old .) }}
{{- $complete = false }}
{{- end }}
{{- end }}
{{- $data := dict }}
{{- if $complete }}
{{- range $files }}
{{- $_ := set $data . (get $old .) }}
{{- end }}
{{- else }}
{{- $days := int $tls.validityDays }}
{{- $svc := include "muster.schedulerName" . }}
{{- $ns := .Release.Namespace }}
{{- $ca := genCA (printf "%s-extender-ca" $svc) $days }}
{{- $dns := list "localhost" $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $server := genSignedCert "muster-extender" (list "127.0.0.1") $dns $days $ca }}
{{- $client := genSignedCert "kube-scheduler" nil nil $days $ca }}
{{- $_ := set $data "ca.crt" ($ca.Cert | b64enc) }}
{{- $_ := set $data "tls.crt" ($server.Cert | b64enc) }}
{{- $_ := set $data "tls.key" ($server.Key | b64enc) }}
{{- $_ := set $data "client.crt" ($client.Cert | b64enc) }}
{{- $_ := set $data "client.key" ($client.Key | b64enc) }}
{{- end }}
{{- $_ := set $tls "_rendered" $data }}
{{- end }}
{{- toYaml (get $tls "_rendered") }}
{{- end }}
