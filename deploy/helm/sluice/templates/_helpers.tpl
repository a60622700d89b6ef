{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image $tag -}}
{{- else -}}
{{- printf "%s:%s" .image $tag -}}
{{- end -}}
{{- end -}}

{{/* DATABASE_URL and, when configured, the Kafka SASL settings, from the existing Secrets. */}}
{{- define "sluice.secretEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.existingSecret names the Secret holding DATABASE_URL" .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.databaseUrlKey }}
{{- end -}}

{{- define "sluice.kafkaEnv" -}}
{{- with .Values.secrets -}}
{{- if .kafkaSaslSecret }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .kafkaSaslMechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ required "secrets.kafkaSaslUsername goes with secrets.kafkaSaslSecret" .kafkaSaslUsername | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .kafkaSaslSecret }}
      key: {{ .kafkaSaslPasswordKey }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.accessEnv" -}}
{{- with .Values.secrets -}}
{{- if .accessSecret }}
- name: SLUICE_ACCESS_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .accessSecret }}
      key: {{ .accessSecretKey }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* shop-api's bearer token settings (shopApi.auth): the set ones only. */}}
{{- define "sluice.shopAuthEnv" -}}
{{- with .Values.shopApi.auth -}}
{{- if .secret }}
- name: SHOP_AUTH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .secretKey }}
{{- end -}}
{{- if .jwksUrl }}
- name: SHOP_AUTH_JWKS_URL
  value: {{ .jwksUrl | quote }}
{{- end -}}
{{- if .issuer }}
- name: SHOP_AUTH_ISSUER
  value: {{ .issuer | quote }}
{{- end -}}
{{- if .audience }}
- name: SHOP_AUTH_AUDIENCE
  value: {{ .audience | quote }}
{{- end }}
- name: SHOP_AUTH_ADMIN_SCOPE
  value: {{ .adminScope | quote }}
{{- end -}}
{{- end -}}

{{- define "sluice.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end -}}
{{- end -}}

{{/*
A service's Deployment: dict root, component, values (its section), env (YAML list text), and
masterKey (true: the master key of personal data mounted from secrets.masterKeySecret).
*/}}
{{- define "sluice.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sluice.fullname" $root }}-{{ .component }}
  labels:
    {{- include "sluice.labels" . | nindent 4 }}
spec:
  replicas: {{ $v.replicas }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "sluice.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "sluice.selectorLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ include "sluice.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ .grace | default 40 }}
      containers:
        - name: {{ .component }}
          image: {{ include "sluice.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
          envFrom:
            - configMapRef:
                name: {{ include "sluice.fullname" $root }}
          env:
            {{- include "sluice.secretEnv" $root | nindent 12 }}
            {{- if .masterKey }}
            - name: SLUICE_MASTER_KEY_FILE
              value: /etc/sluice/master-key/master-key
            {{- end }}
            {{- .env | nindent 12 }}
            {{- include "sluice.envMap" $v.env | nindent 12 }}
          livenessProbe:
            httpGet: { path: /healthz, port: http }
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet: { path: /readyz, port: http }
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          startupProbe:
            httpGet: { path: /healthz, port: http }
            periodSeconds: 2
            failureThreshold: 60
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .masterKey }}
            - name: master-key
              mountPath: /etc/sluice/master-key
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if .masterKey }}
        - name: master-key
          secret:
            secretName: {{ required "secrets.masterKeySecret is required" $root.Values.secrets.masterKeySecret }}
            items:
              - key: {{ $root.Values.secrets.masterKeyKey }}
                path: master-key
            defaultMode: 0400
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* A service's ClusterIP Service: dict root, component, port, type. */}}
{{- define "sluice.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "sluice.fullname" .root }}-{{ .component }}
  labels:
    {{- include "sluice.labels" . | nindent 4 }}
spec:
  type: {{ .type | default "ClusterIP" }}
  selector:
    {{- include "sluice.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
{{- end -}}

{{- define "sluice.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "sluice.fullname" .root }}-{{ .component }}
  labels:
    {{- include "sluice.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "sluice.selectorLabels" . | nindent 6 }}
{{- end -}}
