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

{{/* the pod spec every service shares; .extraEnv and .port are per service */}}
{{- define "sluice.podSpec" -}}
terminationGracePeriodSeconds: 30
securityContext: {runAsNonRoot: true, runAsUser: 10001}
containers:
  - name: {{ .name }}
    image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
    imagePullPolicy: {{ .root.Values.image.pullPolicy }}
    args: ["run", "{{ .name }}"]
    env:
      - {name: SLUICE_RUNTIME__KAFKA__BOOTSTRAP_SERVERS, value: {{ .root.Values.kafka.bootstrapServers | quote }}}
      - {name: SLUICE_RUNTIME__KAFKA__SECURITY_PROTOCOL, value: {{ .root.Values.kafka.securityProtocol | quote }}}
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
      {{- range .extraEnv }}
      - {name: {{ .name }}, value: {{ .value | quote }}}
      {{- end }}
    ports:
      - {name: metrics, containerPort: 9464}
      {{- with .port }}
      - {name: service, containerPort: {{ . }}}
      {{- end }}
      {{- with .fhirPort }}
      - {name: fhir, containerPort: {{ . }}}
      {{- end }}
    livenessProbe: {httpGet: {path: /healthz, port: metrics}, periodSeconds: 10}
    readinessProbe: {httpGet: {path: /readyz, port: metrics}, periodSeconds: 5}
    resources: {{ toJson .root.Values.resources }}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    {{- $userCert := and .root.Values.kafka.perServiceUsers .root.Values.kafka.tls.clientCertificate }}
    {{- if .root.Values.kafka.tls.secret }}
    volumeMounts:
      - {name: kafka-tls, mountPath: /etc/sluice/kafka-tls, readOnly: true}
      {{- if $userCert }}
      - {name: kafka-user, mountPath: /etc/sluice/kafka-user, readOnly: true}
      {{- end }}
    {{- end }}
{{- if .root.Values.kafka.tls.secret }}
volumes:
  - name: kafka-tls
    secret: {secretName: {{ .root.Values.kafka.tls.secret | quote }}}
  {{- if and .root.Values.kafka.perServiceUsers .root.Values.kafka.tls.clientCertificate }}
  - name: kafka-user
    secret: {secretName: {{ printf "%s%s" .root.Values.kafka.userPrefix .name | quote }}}
  {{- end }}
{{- end }}
{{- end }}
