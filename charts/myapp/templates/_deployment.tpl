{{/*
A Deployment for one long-running role (web, realtime, worker or beat).
Usage: include "myapp.deployment" (dict "root" $ "component" "web")

web and realtime are HTTP roles: they get the http port, the three probes, the
preStop sleep and the Prometheus scrape annotations. beat is a singleton:
always one replica, Recreate strategy.
*/}}
{{- define "myapp.deployment" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $role := index $root.Values $component }}
{{- $ctx := dict "root" $root "component" $component }}
{{- $http := has $component (list "web" "realtime") }}
{{- /* The worker serves /metrics on WORKER_METRICS_PORT (its tasks, dead letters, outbox). */}}
{{- $workerMetricsPort := "" }}
{{- if eq $component "worker" }}
{{- $workerMetricsPort = toString (default "" ($role.env | default dict).WORKER_METRICS_PORT) }}
{{- if eq $workerMetricsPort "0" }}{{ $workerMetricsPort = "" }}{{ end }}
{{- end }}
{{- $autoscaling := get $role "autoscaling" | default dict }}
{{- $port := include "myapp.roleConfig" (dict "root" $root "role" $role "key" "PORT") | default "8000" | atoi }}
{{- if $http }}
{{- $drain := include "myapp.roleConfig" (dict "root" $root "role" $role "key" "SHUTDOWN_DRAIN_SECONDS") | default "0" | atoi }}
{{- $graceful := include "myapp.roleConfig" (dict "root" $root "role" $role "key" "GUNICORN_GRACEFUL_TIMEOUT") | default "30" | atoi }}
{{- if le $graceful $drain }}
{{- fail (printf "%s: GUNICORN_GRACEFUL_TIMEOUT (%d) must be greater than SHUTDOWN_DRAIN_SECONDS (%d): it is counted from SIGTERM and covers the drain" $component $graceful $drain) }}
{{- end }}
{{- $needed := add $role.preStopSleepSeconds $drain $graceful }}
{{- if le (int $role.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be greater than preStopSleepSeconds + SHUTDOWN_DRAIN_SECONDS + GUNICORN_GRACEFUL_TIMEOUT (%d)" $component (int $role.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}
{{- $extraLabels := mergeOverwrite (dict) ($root.Values.podLabels | default dict) (get $role "podLabels" | default dict) }}
{{- $extraAnnotations := mergeOverwrite (dict) ($root.Values.podAnnotations | default dict) (get $role "podAnnotations" | default dict) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "myapp.componentName" $ctx }}
  labels:
    {{- include "myapp.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if eq $component "beat" }}
  # Singleton: never two schedulers, not even during a rollout.
  replicas: 1
  strategy:
    type: Recreate
  {{- else }}
  {{- if not (get $autoscaling "enabled") }}
  replicas: {{ $role.replicaCount }}
  {{- end }}
  strategy:
    {{- toYaml $role.strategy | nindent 4 }}
  {{- end }}
  {{- with get $role "minReadySeconds" }}
  minReadySeconds: {{ . }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "myapp.componentSelectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "myapp.componentLabels" $ctx | nindent 8 }}
        {{- range $key, $value := $extraLabels }}
        {{ $key }}: {{ $value | quote }}
        {{- end }}
      annotations:
        {{- include "myapp.checksumAnnotations" $root | nindent 8 }}
        {{- if and $http $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $port | quote }}
        prometheus.io/path: {{ $root.Values.metrics.path | quote }}
        {{- else if and $workerMetricsPort $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $workerMetricsPort | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- range $key, $value := $extraAnnotations }}
        {{ $key }}: {{ $value | quote }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "myapp.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $role.terminationGracePeriodSeconds }}
      containers:
        - name: {{ $component }}
          image: {{ include "myapp.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - {{ $component }}
            {{- range $role.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          {{- if $http }}
          ports:
            - name: http
              containerPort: {{ $port }}
              protocol: TCP
          {{- else if $workerMetricsPort }}
          ports:
            - name: metrics
              containerPort: {{ $workerMetricsPort | atoi }}
              protocol: TCP
          {{- end }}
          {{- include "myapp.containerEnv" (dict "root" $root "role" $role "configMap" (include "myapp.fullname" $root) "secret" (include "myapp.secretName" $root)) | nindent 10 }}
          {{- if $http }}
          startupProbe:
            {{- toYaml $role.startupProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $role.readinessProbe | nindent 12 }}
          livenessProbe:
            {{- toYaml $role.livenessProbe | nindent 12 }}
          lifecycle:
            preStop:
              # Keep serving while endpoint removal propagates; SIGTERM (and
              # the application's drain) starts only after this.
              exec:
                command: ["sleep", "{{ $role.preStopSleepSeconds }}"]
          {{- else }}
          {{- with get $role "livenessProbe" }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- end }}
          resources:
            {{- toYaml $role.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            {{- with $root.Values.tmpVolume.medium }}
            medium: {{ . }}
            {{- end }}
            {{- with $root.Values.tmpVolume.sizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
      {{- with get $role "nodeSelector" }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with get $role "tolerations" }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with get $role "affinity" }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if get $role "topologySpreadConstraints" }}
      topologySpreadConstraints:
        {{- toYaml (get $role "topologySpreadConstraints") | nindent 8 }}
      {{- else if and $root.Values.topologySpread.enabled (ne $component "beat") }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "myapp.componentSelectorLabels" $ctx | nindent 14 }}
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "myapp.componentSelectorLabels" $ctx | nindent 14 }}
      {{- end }}
{{- end }}
