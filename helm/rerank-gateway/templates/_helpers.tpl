{{/*
Names.
*/}}
{{- define "rerank-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rerank-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rerank-gateway.redisName" -}}
{{- printf "%s-redis" (include "rerank-gateway.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "rerank-gateway.postgresName" -}}
{{- printf "%s-postgres" (include "rerank-gateway.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* The Secret holding the bundled PostgreSQL's password, and its key. */}}
{{- define "rerank-gateway.postgresSecretName" -}}
{{- .Values.ledger.auth.existingSecret | default (include "rerank-gateway.postgresName" .) }}
{{- end }}

{{- define "rerank-gateway.postgresSecretKey" -}}
{{- ternary .Values.ledger.auth.passwordKey "password" (not (empty .Values.ledger.auth.existingSecret)) }}
{{- end }}

{{- define "rerank-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rerank-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rerank-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Labels. Selector labels include the component so the gateway and the bundled Redis never
select each other's pods.
*/}}
{{- define "rerank-gateway.labels" -}}
app.kubernetes.io/name: {{ include "rerank-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "rerank-gateway.commonLabels" . }}
{{- end }}

{{/* Labels without the name/instance pair (for pod templates, which add selector labels). */}}
{{- define "rerank-gateway.commonLabels" -}}
helm.sh/chart: {{ include "rerank-gateway.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rerank-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rerank-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rerank-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "rerank-gateway.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rerank-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "rerank-gateway.postgresSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rerank-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgres
{{- end }}

{{- define "rerank-gateway.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the ConfigMap is mounted and the file the gateway is told to read. */}}
{{- define "rerank-gateway.configDir" -}}/etc/rerank-gateway{{- end }}
{{- define "rerank-gateway.configPath" -}}{{ include "rerank-gateway.configDir" . }}/config.yaml{{- end }}

{{/*
The Redis URL the gateway uses: config.state.redis_url if given, else redis.url, else the
bundled Redis Service. Empty when there is no Redis.
*/}}
{{- define "rerank-gateway.redisUrl" -}}
{{- $state := (.Values.config | default dict).state | default dict }}
{{- if and .Values.redis.enabled .Values.redis.url }}
{{- fail "redis: set either redis.url (external Redis) or redis.enabled (bundled Redis), not both" }}
{{- end }}
{{- if and (or $state.redis_url $state.sentinel) (or .Values.redis.enabled .Values.redis.url) }}
{{- fail "config.state.redis_url is set: leave redis.url empty and redis.enabled false, or drop config.state.redis_url" }}
{{- end }}
{{- if $state.sentinel }}
{{- /* a state.sentinel block: the gateway builds its URL; nothing to fill in */}}
{{- else if $state.redis_url }}
{{- $state.redis_url }}
{{- else if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.redis.enabled }}
{{- printf "redis://%s.%s.svc:%d/0" (include "rerank-gateway.redisName" .) .Release.Namespace (int .Values.redis.port) }}
{{- end }}
{{- end }}

{{/*
The ledger URL the gateway uses: config.ledger.url if given, else ledger.url, else the
bundled PostgreSQL Service. Empty when there is no ledger. The bundled URL carries no
password: the gateway gets it as PGPASSWORD (read by asyncpg as libpq does), so a password
with URL-special characters needs no escaping and never sits in the ConfigMap.
*/}}
{{- define "rerank-gateway.ledgerUrl" -}}
{{- $l := .Values.ledger }}
{{- $given := ((.Values.config | default dict).ledger | default dict).url }}
{{- if and $l.enabled $l.url }}
{{- fail "ledger: set either ledger.url (external PostgreSQL) or ledger.enabled (bundled PostgreSQL), not both" }}
{{- end }}
{{- if and $given (or $l.enabled $l.url) }}
{{- fail "config.ledger.url is set: leave ledger.url empty and ledger.enabled false, or drop config.ledger.url" }}
{{- end }}
{{- if $l.url }}
{{- include "rerank-gateway.checkNoLiteralSecrets" (list $l.url "ledger.url") }}
{{- end }}
{{- if $given }}
{{- $given }}
{{- else if $l.url }}
{{- $l.url }}
{{- else if $l.enabled }}
{{- printf "postgresql://%s@%s.%s.svc:%d/%s" $l.username (include "rerank-gateway.postgresName" .) .Release.Namespace (int $l.port) $l.database }}
{{- end }}
{{- end }}

{{/*
The PostgreSQL ports the gateway's egress must reach for an external ledger:
networkPolicy.egress.postgresPorts, else the port of each host in the URL (5432 when a host
names none, or when the whole URL is a ${VAR}). One port per line.
*/}}
{{- define "rerank-gateway.postgresPorts" -}}
{{- $ports := .Values.networkPolicy.egress.postgresPorts }}
{{- if not $ports }}
{{- $url := include "rerank-gateway.ledgerUrl" . }}
{{- $hosts := regexReplaceAll "^postgres(ql)?://([^@/?]*@)?([^/?]*).*$" $url "${3}" }}
{{- if not (hasPrefix "postgres" $url) }}{{ $hosts = "" }}{{ end }}
{{- range (splitList "," $hosts) }}
{{- $port := regexReplaceAll "^(\\[[^]]*\\]|[^:]*)(:([0-9]+))?$" . "${3}" }}
{{- $ports = append $ports (int (default "5432" $port)) }}
{{- end }}
{{- end }}
{{- range ($ports | uniq) }}
{{ int . }}
{{- end }}
{{- end }}

{{/*
The rendered config's ledger.spill_dir, checked: an absolute path the chart can mount a
volume at (not /, /tmp, or the config's directory). Empty when not set.
*/}}
{{- define "rerank-gateway.spillDir" -}}
{{- $cfg := include "rerank-gateway.configDict" . | fromYaml }}
{{- $dir := (($cfg.ledger | default dict).spill_dir) | default "" | trimSuffix "/" }}
{{- $configDir := include "rerank-gateway.configDir" . }}
{{- if and (hasKey ($cfg.ledger | default dict) "spill_dir") ($cfg.ledger.spill_dir) }}
{{- if not (hasPrefix "/" $dir) }}
{{- fail (printf "config.ledger.spill_dir (%q) must be an absolute path: the chart mounts a volume there" $cfg.ledger.spill_dir) }}
{{- end }}
{{- if or (has $dir (list "" "/tmp" $configDir)) (hasPrefix (printf "%s/" $configDir) $dir) }}
{{- fail (printf "config.ledger.spill_dir (%q) must be a directory of its own, not /, /tmp or under %s" $cfg.ledger.spill_dir $configDir) }}
{{- end }}
{{- $dir }}
{{- end }}
{{- end }}

{{/*
The environment of the gateway and of its ledger-migrate init container: the existing
Secret and extraEnvFrom as envFrom, TMPDIR, the bundled PostgreSQL's password, extraEnv.
*/}}
{{- define "rerank-gateway.containerEnv" -}}
{{- if or .Values.secrets.existingSecret .Values.extraEnvFrom }}
envFrom:
  {{- with .Values.secrets.existingSecret }}
  - secretRef:
      name: {{ . }}
      optional: {{ $.Values.secrets.optional }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
env:
  - name: TMPDIR
    value: /tmp
  {{- if .Values.ledger.enabled }}
  # The bundled PostgreSQL's password; the ledger URL names no password, so the
  # PostgreSQL client takes it from here.
  - name: PGPASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "rerank-gateway.postgresSecretName" . }}
        key: {{ include "rerank-gateway.postgresSecretKey" . }}
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The drain time the gateway will use (config.server.drain_timeout_s, default 20 as in the
gateway), rounded up to whole seconds.
*/}}
{{- define "rerank-gateway.drainSeconds" -}}
{{- $server := ((.Values.config | default dict).server | default dict) }}
{{- $drain := 20 }}
{{- if hasKey $server "drain_timeout_s" }}{{ $drain = $server.drain_timeout_s }}{{ end }}
{{- if lt (float64 $drain) 0.0 }}{{ fail "config.server.drain_timeout_s must not be negative" }}{{ end }}
{{- int (ceil $drain) }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop sleep + drain + margin, or an explicit value >= that. */}}
{{- define "rerank-gateway.terminationGracePeriodSeconds" -}}
{{- $min := add (int .Values.shutdown.preStopSleepSeconds) (int (include "rerank-gateway.drainSeconds" .)) (int .Values.shutdown.graceMarginSeconds) }}
{{- $explicit := .Values.shutdown.terminationGracePeriodSeconds }}
{{- if not (kindIs "invalid" $explicit) }}
{{- if lt (int $explicit) (int $min) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds=%d is shorter than preStopSleepSeconds + config.server.drain_timeout_s + graceMarginSeconds = %d" (int $explicit) (int $min)) }}
{{- end }}
{{- int $explicit }}
{{- else }}
{{- $min }}
{{- end }}
{{- end }}

{{/*
Refuse literal secrets in the config: a key that looks like it holds a credential must be a
${VAR} reference (or empty). Called with (list $value $path).
*/}}
{{- define "rerank-gateway.checkNoLiteralSecrets" -}}
{{- $value := index . 0 }}
{{- $path := index . 1 }}
{{- if kindIs "map" $value }}
{{- range $k, $v := $value }}
{{- $p := printf "%s.%s" $path $k }}
{{- if and (kindIs "string" $v) (regexMatch "(?i)(^|_)(key|api_?key|secret|secret_?key|password|passwd|token|access_?key|private_?key|credentials?|connection_?string|pass_?phrase)$" $k) }}
{{- if and $v (not (regexMatch "^\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}$" $v)) }}
{{- fail (printf "%s looks like a secret: write \"${SOME_VAR}\" and put SOME_VAR in the Secret named by secrets.existingSecret; the chart never puts secret values in the ConfigMap" $p) }}
{{- end }}
{{- end }}
{{- include "rerank-gateway.checkNoLiteralSecrets" (list $v $p) }}
{{- end }}
{{- else if kindIs "slice" $value }}
{{- range $i, $v := $value }}
{{- include "rerank-gateway.checkNoLiteralSecrets" (list $v (printf "%s[%d]" $path $i)) }}
{{- end }}
{{- else if kindIs "string" $value }}
{{- if and (regexMatch "^rediss?(\\+sentinel|\\+cluster)?://[^/@:]*:[^/@]+@" $value) (not (regexMatch "^rediss?(\\+sentinel|\\+cluster)?://[^/@:]*:\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}@" $value)) }}
{{- fail (printf "%s has a literal password in a Redis URL: write it as ${REDIS_PASSWORD} and put REDIS_PASSWORD in the Secret named by secrets.existingSecret" $path) }}
{{- end }}
{{- /* A PostgreSQL URL: the password in the user part or in a password= parameter. */}}
{{- $var := "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" }}
{{- if hasPrefix "postgres" $value }}
{{- /* user:password is what precedes the last @ before any ?: greedy, so a password
with an unescaped / or @ is caught too. */}}
{{- $userinfo := regexReplaceAll "^postgres(ql)?://([^?#]*)@.*$" (regexFind "^postgres(ql)?://[^?#]*@" $value) "${2}" }}
{{- $password := regexReplaceAll "^[^:]*:?" $userinfo "" }}
{{- $literalUser := and (contains ":" $userinfo) $password (not (regexMatch (printf "^%s$" $var) $password)) }}
{{- $literalParam := and (regexMatch "[?&]password=[^&]" $value) (not (regexMatch (printf "[?&]password=%s(&|$)" $var) $value)) }}
{{- if or $literalUser $literalParam }}
{{- fail (printf "%s has a literal password in a PostgreSQL URL: write it as ${LEDGER_PASSWORD} and put LEDGER_PASSWORD in the Secret named by secrets.existingSecret" $path) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The gateway config as a dict: .Values.config with the chart's wiring applied.
*/}}
{{- define "rerank-gateway.configDict" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $port := int .Values.containerPort }}
{{- if and (hasKey $server "port") (ne (int $server.port) $port) }}
{{- fail (printf "config.server.port (%v) differs from containerPort (%d): set containerPort only; the chart writes it into the config" $server.port $port) }}
{{- end }}
{{- if and (hasKey $server "host") (not (has $server.host (list "0.0.0.0" "::"))) }}
{{- fail (printf "config.server.host is %q: in a pod the gateway must listen on all addresses (0.0.0.0, or :: for IPv6)" $server.host) }}
{{- end }}
{{- $_ := set $server "host" (get $server "host" | default "0.0.0.0") }}
{{- $_ = set $server "port" $port }}
{{- $metricsPort := .Values.metrics.port }}
{{- if and (hasKey $server "metrics_port") (ne (toString $server.metrics_port) (toString $metricsPort)) }}
{{- fail (printf "config.server.metrics_port (%v) differs from metrics.port (%v): set metrics.port only; the chart writes it into the config" $server.metrics_port $metricsPort) }}
{{- end }}
{{- if $metricsPort }}
{{- $_ = set $server "metrics_port" (int $metricsPort) }}
{{- /* Prometheus scrapes the pod IP; the Ingress never routes this port. */}}
{{- $_ = set $server "metrics_host" (get $server "metrics_host" | default "0.0.0.0") }}
{{- end }}
{{- if not (hasKey $server "drain_timeout_s") }}
{{- $_ = set $server "drain_timeout_s" 20 }}
{{- end }}
{{- $_ = set $cfg "server" $server }}
{{- $auth := get $cfg "auth" | default dict }}
{{- if eq (toString (get $auth "mode")) "none" }}
{{- fail "config.auth.mode none is not allowed: the gateway listens on 0.0.0.0 in a pod and requires keys" }}
{{- end }}
{{- $redisUrl := include "rerank-gateway.redisUrl" . }}
{{- if $redisUrl }}
{{- $state := get $cfg "state" | default dict }}
{{- $_ = set $state "redis_url" $redisUrl }}
{{- /* The bundled (trial) Redis evicts by design; the gateway would refuse it by default. */}}
{{- if and .Values.redis.enabled (ne (toString .Values.redis.maxmemoryPolicy) "noeviction") (not (hasKey $state "on_evicting_redis")) }}
{{- $_ = set $state "on_evicting_redis" "warn" }}
{{- end }}
{{- $_ = set $cfg "state" $state }}
{{- /* Every shared backend on Redis unless the values say otherwise (explicitly). */}}
{{- $cache := get $cfg "cache" | default dict }}
{{- if not (hasKey $cache "backend") }}
{{- $_ = set $cache "backend" "redis" }}
{{- end }}
{{- $_ = set $cfg "cache" $cache }}
{{- $limits := get $cfg "limits" | default dict }}
{{- if not (hasKey $limits "limits_backend") }}
{{- $_ = set $limits "limits_backend" "redis" }}
{{- end }}
{{- $_ = set $cfg "limits" $limits }}
{{- end }}
{{- $ledgerUrl := include "rerank-gateway.ledgerUrl" . }}
{{- $ledger := get $cfg "ledger" }}
{{- if $ledgerUrl }}
{{- $ledger = $ledger | default dict }}
{{- $_ = set $ledger "url" $ledgerUrl }}
{{- with .Values.ledger.schema }}
{{- if and (hasKey $ledger "schema") (ne (toString $ledger.schema) .) }}
{{- fail (printf "config.ledger.schema (%v) differs from ledger.schema (%v): set one of them" $ledger.schema .) }}
{{- end }}
{{- $_ = set $ledger "schema" . }}
{{- end }}
{{- $_ = set $cfg "ledger" $ledger }}
{{- else if kindIs "map" $ledger }}
{{- fail "config.ledger has no url: set ledger.url (an external PostgreSQL), ledger.enabled (the bundled one, for trials) or config.ledger.url" }}
{{- end }}
{{- include "rerank-gateway.checkNoLiteralSecrets" (list $cfg "config") }}
{{- toYaml $cfg }}
{{- end }}
