{{- define "sluice.labels" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "sluice.selector" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- default (printf "%s-sluice" .Release.Name) .Values.serviceAccount.name -}}
{{- end }}

{{/* whether a component serves an entrance (a listener that needs TLS) */}}
{{- define "sluice.hasEntrance" -}}
{{- if or (eq .name "ingest") (eq .name "dead-letter") (and (eq .name "identifier-match") .root.Values.reviewApi.port) -}}true{{- end -}}
{{- end }}

{{/* whether a component serves an HTTP API that needs bearer tokens (MLLP has none) */}}
{{- define "sluice.needsTokens" -}}
{{- if and (include "sluice.hasEntrance" .) (or (ne .name "ingest") .root.Values.ingest.fhirPort) -}}
{{- if not (or .root.Values.auth.tokensSecret .root.Values.auth.oidc.secret) -}}
{{- fail "auth.tokensSecret or auth.oidc.secret is required: every API needs bearer tokens" -}}
{{- end -}}
true
{{- end -}}
{{- end }}

{{/* TLS and token settings of a component's entrances, as environment variables */}}
{{- define "sluice.entranceEnv" -}}
{{- $v := .root.Values }}
{{- $prefixes := list }}
{{- if eq .name "ingest" }}
{{- $prefixes = list "SLUICE_MLLP_TLS" }}
{{- if $v.ingest.fhirPort }}{{- $prefixes = append $prefixes "SLUICE_FHIR_TLS" }}{{- end }}
{{- else if eq .name "dead-letter" }}
{{- $prefixes = list "SLUICE_API_TLS" }}
{{- else if and (eq .name "identifier-match") $v.reviewApi.port }}
{{- $prefixes = list "SLUICE_REVIEW_API__TLS" }}
- {name: SLUICE_REVIEW_API__ADDR, value: {{ printf "0.0.0.0:%v" $v.reviewApi.port | quote }}}
{{- end }}
{{- range $prefixes }}
{{- if $v.tls.plaintext }}
- {name: {{ printf "%s__PLAINTEXT" . }}, value: "true"}
{{- else }}
- {name: {{ printf "%s__CERT_FILE" . }}, value: /etc/sluice/tls/tls.crt}
- {name: {{ printf "%s__KEY_FILE" . }}, value: /etc/sluice/tls/tls.key}
{{- if and (eq . "SLUICE_MLLP_TLS") $v.tls.mllpClientCaSecret }}
- {name: SLUICE_MLLP_TLS__CLIENT_CA_FILE, value: /etc/sluice/mllp-client-ca/ca.crt}
{{- end }}
{{- end }}
{{- end }}
{{- if include "sluice.needsTokens" . }}
{{- with $v.auth.tokensSecret }}
- {name: SLUICE_AUTH__TOKENS_FILE, value: /etc/sluice/tokens/tokens.yaml}
{{- end }}
{{- with $v.auth.oidc.secret }}
{{- range $var, $key := dict "ISSUER" "issuer" "AUDIENCE" "audience" "JWKS_URL" "jwksUrl" }}
- name: SLUICE_AUTH__OIDC__{{ $var }}
  valueFrom: {secretKeyRef: {name: {{ $v.auth.oidc.secret | quote }}, key: {{ $key }}}}
{{- end }}
{{- if $v.auth.oidc.caCertificate }}
- {name: SLUICE_AUTH__OIDC__JWKS_CA_FILE, value: /etc/sluice/oidc/ca.crt}
{{- end }}
- {name: SLUICE_AUTH__OIDC__ROLES_CLAIM, value: {{ $v.auth.oidc.rolesClaim | quote }}}
- {name: SLUICE_AUTH__OIDC__ACTOR_CLAIM, value: {{ $v.auth.oidc.actorClaim | quote }}}
{{- with $v.auth.oidc.roleValues }}
{{- $pairs := list }}
{{- range $group, $role := . }}
{{- $pairs = append $pairs (printf "%q=%q" $group $role) }}
{{- end }}
- {name: SLUICE_AUTH__OIDC__ROLE_VALUES, value: {{ printf "{%s}" (join ", " $pairs) | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* the mounts (name, path, secret) of a component: Kafka's and its entrances' Secrets */}}
{{- define "sluice.mounts" -}}
{{- $v := .root.Values }}
{{- $m := list }}
{{- if $v.kafka.tls.secret }}
{{- $m = append $m (dict "name" "kafka-tls" "path" "/etc/sluice/kafka-tls" "secret" $v.kafka.tls.secret) }}
{{- if and $v.kafka.perServiceUsers $v.kafka.tls.clientCertificate }}
{{- $m = append $m (dict "name" "kafka-user" "path" "/etc/sluice/kafka-user" "secret" (printf "%s%s" $v.kafka.userPrefix .name)) }}
{{- end }}
{{- end }}
{{- if include "sluice.hasEntrance" . }}
{{- if not $v.tls.plaintext }}
{{- $m = append $m (dict "name" "tls" "path" "/etc/sluice/tls" "secret" (required "tls.secret is required unless tls.plaintext is true" $v.tls.secret)) }}
{{- if and (eq .name "ingest") $v.tls.mllpClientCaSecret }}
{{- $m = append $m (dict "name" "mllp-client-ca" "path" "/etc/sluice/mllp-client-ca" "secret" $v.tls.mllpClientCaSecret) }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "sluice.needsTokens" . }}
{{- with $v.auth.tokensSecret }}
{{- $m = append $m (dict "name" "tokens" "path" "/etc/sluice/tokens" "secret" .) }}
{{- end }}
{{- if and $v.auth.oidc.secret $v.auth.oidc.caCertificate }}
{{- $m = append $m (dict "name" "oidc" "path" "/etc/sluice/oidc" "secret" $v.auth.oidc.secret) }}
{{- end }}
{{- end }}
{{- toJson $m }}
{{- end }}

{{/* the pod spec every service shares; .extraEnv and .port are per service */}}
{{- define "sluice.podSpec" -}}
{{- $mounts := include "sluice.mounts" . | fromJsonArray -}}
terminationGracePeriodSeconds: 30
serviceAccountName: {{ include "sluice.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
containers:
  - name: {{ .name }}
    image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
    imagePullPolicy: {{ .root.Values.image.pullPolicy }}
    args: ["run", "{{ .name }}"]
    env:
      - {name: SLUICE_RUNTIME__KAFKA__BOOTSTRAP_SERVERS, value: {{ .root.Values.kafka.bootstrapServers | quote }}}
      - {name: SLUICE_RUNTIME__KAFKA__SECURITY_PROTOCOL, value: {{ .root.Values.kafka.securityProtocol | quote }}}
      - {name: SLUICE_RUNTIME__KAFKA__COMPRESSION, value: {{ .root.Values.kafka.compression | default "lz4" | quote }}}
      {{- with .root.Values.kafka.saslMechanism }}
      - {name: SLUICE_RUNTIME__KAFKA__SASL_MECHANISM, value: {{ . | quote }}}
      {{- end }}
      {{- $user := printf "%s%s" .root.Values.kafka.userPrefix .name }}
      {{- $sasl := hasPrefix "sasl" .root.Values.kafka.securityProtocol }}
      {{- if and .root.Values.kafka.perServiceUsers $sasl }}
      - {name: SLUICE_RUNTIME__KAFKA__SASL_USERNAME, value: {{ $user | quote }}}
      - name: SLUICE_RUNTIME__KAFKA__SASL_PASSWORD
        valueFrom: {secretKeyRef: {name: {{ $user | quote }}, key: password}}
      {{- else if not .root.Values.kafka.perServiceUsers }}
      {{- with .root.Values.kafka.saslUsername }}
      - {name: SLUICE_RUNTIME__KAFKA__SASL_USERNAME, value: {{ . | quote }}}
      {{- end }}
      {{- with .root.Values.kafka.saslPasswordSecret }}
      - name: SLUICE_RUNTIME__KAFKA__SASL_PASSWORD
        valueFrom: {secretKeyRef: {name: {{ . | quote }}, key: password}}
      {{- end }}
      {{- end }}
      {{- if .root.Values.kafka.tls.secret }}
      - {name: SLUICE_RUNTIME__KAFKA__SSL_CA_LOCATION, value: /etc/sluice/kafka-tls/ca.crt}
      {{- if .root.Values.kafka.tls.clientCertificate }}
      {{- $dir := ternary "/etc/sluice/kafka-user" "/etc/sluice/kafka-tls" .root.Values.kafka.perServiceUsers }}
      - {name: SLUICE_RUNTIME__KAFKA__SSL_CERTIFICATE_LOCATION, value: {{ printf "%s/user.crt" $dir }}}
      - {name: SLUICE_RUNTIME__KAFKA__SSL_KEY_LOCATION, value: {{ printf "%s/user.key" $dir }}}
      {{- end }}
      {{- end }}
      - {name: SLUICE_RUNTIME__SCHEMA_REGISTRY_URL, value: {{ .root.Values.schemaRegistryUrl | quote }}}
      - {name: SLUICE_RUNTIME__HTTP_ADDR, value: "0.0.0.0:9464"}
      - {name: SLUICE_RUNTIME__LOG_FORMAT, value: json}
      - name: SLUICE_RUNTIME__INSTANCE_ID
        valueFrom: {fieldRef: {fieldPath: metadata.name}}
      {{- with .root.Values.tracing.otlpEndpoint }}
      - {name: SLUICE_RUNTIME__TRACING__OTLP_ENDPOINT, value: {{ . | quote }}}
      - {name: SLUICE_RUNTIME__TRACING__SAMPLE_RATIO, value: {{ $.root.Values.tracing.sampleRatio | toString | quote }}}
      - {name: SLUICE_RUNTIME__TRACING__OTLP_PROTOCOL, value: {{ $.root.Values.tracing.otlpProtocol | default "http/protobuf" | quote }}}
      {{- end }}
      {{- with .root.Values.tracing.headersSecret }}
      - name: OTEL_EXPORTER_OTLP_HEADERS
        valueFrom: {secretKeyRef: {name: {{ . | quote }}, key: headers}}
      {{- end }}
      {{- range .extraEnv }}
      - {name: {{ .name }}, value: {{ .value | quote }}}
      {{- end }}
      {{- with include "sluice.entranceEnv" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
    ports:
      - {name: metrics, containerPort: 9464}
      {{- with .port }}
      - {name: service, containerPort: {{ . }}}
      {{- end }}
      {{- with .fhirPort }}
      - {name: fhir, containerPort: {{ . }}}
      {{- end }}
    startupProbe: {httpGet: {path: /healthz, port: metrics}, periodSeconds: 2, failureThreshold: 60}
    livenessProbe: {httpGet: {path: /healthz, port: metrics}, periodSeconds: 10}
    readinessProbe: {httpGet: {path: /readyz, port: metrics}, periodSeconds: 5}
    resources: {{ toJson .root.Values.resources }}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    {{- if $mounts }}
    volumeMounts:
      {{- range $mounts }}
      - {name: {{ .name }}, mountPath: {{ .path }}, readOnly: true}
      {{- end }}
    {{- end }}
{{- if $mounts }}
volumes:
  {{- range $mounts }}
  - name: {{ .name }}
    secret: {secretName: {{ .secret | quote }}}
  {{- end }}
{{- end }}
{{- end }}
