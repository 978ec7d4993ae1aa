#!/usr/bin/env bash
# A local Kafka broker, Alertmanager and Schema Registry (Apicurio, for Avro and
# Protobuf topics) for running the monitor by hand, without Docker:
# `scripts/devstack.sh up|down|status` (or `make dev-up` / `make dev-down`).
#
# All run in the background on free loopback ports, with all their state under
# .devstack/ (gitignored). The broker is the same single-node KRaft broker the
# tests run (configuration from internal/kafkatest/broker.properties.in, jars
# from scripts/deps.sh); Alertmanager routes everything to a receiver that
# drops it, since nobody is paged from a dev stack: look at its UI instead.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
state=$root/.devstack

die() { echo "devstack: $*" >&2; exit 1; }

# The broker's JVM options, as in internal/kafkatest/broker.go (brokerJVM).
jvm_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
	-XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)
kafka_home="${INVMON_CACHE:-$HOME/.cache/invmon}/kafka-$kafka_version"
# Apicurio Registry, as in scripts/deps.sh and internal/kafkatest/registry.go.
apicurio_version=3.0.9
apicurio_home="${INVMON_CACHE:-$HOME/.cache/invmon}/apicurio-$apicurio_version"

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# http_ready PORT PATH: whether GET PATH on the loopback PORT answers 200.
http_ready() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3 && head -n1 <&3 | grep -q ' 200 ') 2>/dev/null
}

# await NAME PIDFILE LIMIT CHECK LOG...: poll the shell command CHECK until it
# succeeds. When NAME's process is gone, or LIMIT seconds have passed since
# $started, show the last lines of each LOG, take the stack down and exit 1.
await() {
	local name=$1 pidfile=$2 limit=$3 check=$4
	shift 4
	until eval "$check"; do
		if ! alive "$pidfile" || ((SECONDS - started > limit)); then
			echo "devstack: $name did not start; last lines of $*:" >&2
			tail -n 30 "$@" >&2 || true
			down >/dev/null
			exit 1
		fi
		sleep 0.2
	done
}

# free_port prints a loopback port nothing listens on. A connection attempt is
# the portable test (no ss/netstat/python needed); Kafka's and Alertmanager's
# own ports are avoided so a real install on this machine never collides.
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 30000))
		case $p in 9092 | 9093 | 9094) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			# Not handed out twice in one `up`.
			[[ " ${taken:-} " == *" $p "* ]] && continue
			taken="${taken:-} $p"
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# stop_group PIDFILE: SIGTERM the process group, SIGKILL after 30 s.
stop_group() {
	local pidfile=$1 pid
	alive "$pidfile" || return 0
	pid=$(cat "$pidfile")
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "devstack: pid $pid ignored SIGTERM for 30 s, killing it" >&2
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

print_env() {
	# shellcheck disable=SC1091
	. "$state/env"
	cat <<EOF
Kafka brokers:   $KAFKA_BROKERS
Alertmanager:    $ALERTMANAGER_URL
Schema Registry: $SCHEMA_REGISTRY_URL
Logs:            .devstack/kafka/broker.log, .devstack/alertmanager/alertmanager.log, .devstack/registry/registry.log

Create the topics the rules read, then run the monitor against them (the flags override the config file):
  go run ./cmd/monitor topics create --brokers $KAFKA_BROKERS --rule-files 'rules/*.yaml' --partitions 4
  KAFKA_SASL_PASSWORD= go run ./cmd/monitor run --config deploy/monitor.yaml --kafka.brokers $KAFKA_BROKERS --alertmanager.url $ALERTMANAGER_URL \\
      --kafka.instance-id invmon-0 --rule-files 'rules/*.yaml' --state-dir .devstack/monitor-state --http.listen 127.0.0.1:8080
Then open the console at http://127.0.0.1:8080/
Feed it an incident:
  go run ./cmd/monitor simulate --brokers $KAFKA_BROKERS --scenario friday-rollback --seed 1 --truth .devstack/truth.json
The same incident in Avro (or protobuf) through the registry: add format: avro to the streams, pass
--schema-registry.url $SCHEMA_REGISTRY_URL to run, and
  go run ./cmd/monitor simulate --brokers $KAFKA_BROKERS --format avro --schema-registry $SCHEMA_REGISTRY_URL
Point the integration tests at this broker:
  set -a; . .devstack/env; set +a; go test ./...
EOF
}

up() {
	if alive "$state/kafka/pid" && alive "$state/alertmanager/pid" && alive "$state/registry/pid"; then
		echo "devstack: already running"
		print_env
		return
	fi
	# A half-started or crashed stack: clear it rather than guess.
	down >/dev/null

	command -v java >/dev/null || die "java not found; run scripts/deps.sh"
	[[ -f $kafka_home/.complete ]] || die "Kafka $kafka_version jars missing in $kafka_home; run scripts/deps.sh"
	local am
	am=$(command -v prometheus-alertmanager || command -v alertmanager) ||
		die "Alertmanager not found; run scripts/deps.sh"

	[[ -f $apicurio_home/.complete ]] || die "Apicurio Registry $apicurio_version missing in $apicurio_home; run scripts/deps.sh"

	mkdir -p "$state/kafka" "$state/alertmanager" "$state/registry"
	local broker_port controller_port am_port registry_port
	broker_port=$(free_port)
	controller_port=$(free_port)
	am_port=$(free_port)
	registry_port=$(free_port)

	# --- Kafka ---
	local k=$state/kafka
	sed -e "s|@BROKER_PORT@|$broker_port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" \
		-e "s|@DATA_DIR@|$k/data|g" -e "s|@LOG_FILE@|$k/broker.log|g" \
		internal/kafkatest/broker.properties.in >"$k/server.properties"
	sed -e "s|@LOG_FILE@|$k/broker.log|g" internal/kafkatest/log4j2.xml >"$k/log4j2.xml"
	local cp="$kafka_home/libs/*" cds=() java_version cluster_id
	# The class-data archive the tests leave in the jar cache starts the JVM
	# about a second faster; see internal/kafkatest/broker.go.
	java_version=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
	[[ -f $kafka_home/cds/jdk-$java_version.jsa ]] && cds=("-XX:SharedArchiveFile=$kafka_home/cds/jdk-$java_version.jsa")
	# A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not
	# starting with '-' (it would parse as a flag).
	cluster_id=-
	while [[ $cluster_id == -* ]]; do
		cluster_id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
	done
	java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${cds[@]}" -Dlog4j2.configurationFile="$k/log4j2.xml" \
		-cp "$cp" kafka.tools.StorageTool format --standalone --cluster-id "$cluster_id" \
		--config "$k/server.properties" >"$k/format.out" 2>&1 ||
		die "formatting Kafka storage failed: $(cat "$k/format.out")"
	# setsid: its own process group, so down can stop the JVM and anything it
	# spawned, and Ctrl-C in this terminal does not reach it.
	setsid java "${jvm_opts[@]}" "${cds[@]}" -Dlog4j2.configurationFile="$k/log4j2.xml" -cp "$cp" \
		kafka.Kafka "$k/server.properties" </dev/null >>"$k/broker.out" 2>&1 &
	echo $! >"$k/pid"

	# --- Alertmanager ---
	local a=$state/alertmanager
	cat >"$a/alertmanager.yml" <<'EOF'
# devstack: everything goes to a receiver without integrations (dropped).
route:
  receiver: "null"
  group_by: ['alertname', 'severity']
  group_wait: 5s
  group_interval: 30s
  repeat_interval: 4h
receivers:
  - name: "null"
EOF
	setsid "$am" --config.file="$a/alertmanager.yml" --storage.path="$a/data" \
		--web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= \
		</dev/null >>"$a/alertmanager.log" 2>&1 &
	echo $! >"$a/pid"

	# --- Schema Registry (Apicurio; schemas kept in .devstack/registry) ---
	local r=$state/registry
	setsid java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
		-Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$registry_port" \
		-Dapicurio.datasource.url="jdbc:h2:file:$r/registry" \
		-jar "$apicurio_home/apicurio-registry-app-$apicurio_version-runner.jar" \
		</dev/null >>"$r/registry.log" 2>&1 &
	echo $! >"$r/pid"

	# env for `. .devstack/env`; the plain files for scripts and `make bench`.
	cat >"$state/env" <<EOF
KAFKA_BROKERS=127.0.0.1:$broker_port
ALERTMANAGER_URL=http://127.0.0.1:$am_port
SCHEMA_REGISTRY_URL=http://127.0.0.1:$registry_port/apis/ccompat/v7
EOF
	echo "127.0.0.1:$broker_port" >"$state/brokers"
	echo "http://127.0.0.1:$am_port" >"$state/alertmanager_url"

	# --- readiness ---
	# The broker logs this line once it registered with its controller and
	# serves clients; it is what the tests' metadata poll waits for too.
	local started=$SECONDS # read by await
	await Kafka "$k/pid" 90 "grep -q 'Kafka Server started' '$k/broker.log' 2>/dev/null" "$k/broker.log" "$k/broker.out"
	await Alertmanager "$a/pid" 60 "http_ready $am_port /-/ready" "$a/alertmanager.log"
	await "the Schema Registry" "$r/pid" 120 "http_ready $registry_port /health/ready" "$r/registry.log"
	# Confluent's default compatibility: a new version must read the old.
	(exec 3<>"/dev/tcp/127.0.0.1/$registry_port" &&
		printf 'PUT /apis/ccompat/v7/config HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{"compatibility":"BACKWARD"}' >&3 &&
		head -n1 <&3 | grep -q ' 200 ') || die "could not set the registry's compatibility"
	echo "devstack: up in $((SECONDS - started)) s"
	print_env
}

down() {
	[[ -d $state ]] || { echo "devstack: not running"; return; }
	stop_group "$state/registry/pid"
	stop_group "$state/alertmanager/pid"
	stop_group "$state/kafka/pid"
	rm -rf "$state"
	echo "devstack: stopped, .devstack removed"
}

status() {
	[[ -d $state ]] || { echo "devstack: not running"; return 3; }
	local rc=0
	for svc in kafka alertmanager registry; do
		if alive "$state/$svc/pid"; then
			echo "$svc: running (pid $(cat "$state/$svc/pid"))"
		else
			echo "$svc: not running"
			rc=3
		fi
	done
	[[ -f $state/env ]] && print_env
	return $rc
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
