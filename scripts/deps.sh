#!/usr/bin/env bash
# Installs what the tests and the dev stack need and the machine lacks, and
# does nothing for what is already there, so `make test` can run it every time:
#   - the Apache Kafka broker jars, from Maven Central via tools/kafka/pom.xml,
#     into ${INVMON_CACHE:-$HOME/.cache/invmon}/kafka-<version>/libs
#     (the directory internal/kafkatest reads);
#   - Apicurio Registry (the Schema Registry) from Maven Central, unpacked into
#     ${INVMON_CACHE:-$HOME/.cache/invmon}/apicurio-<version>;
#   - Debian's prometheus-alertmanager, kcat and docker-compose (as root; as
#     another user it prints the apt-get command and exits 1).
# Java 17+ and Maven are prerequisites it checks but does not install.
set -euo pipefail

cd "$(dirname "$0")/.."

die() { echo "deps.sh: $*" >&2; exit 1; }

# --- prerequisites ---------------------------------------------------------
command -v java >/dev/null 2>&1 ||
	die "java not found: Java 17 or newer runs the Kafka broker (Debian: apt-get install openjdk-17-jre-headless)"
java_version=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
java_major=${java_version%%.*}
[[ $java_major == 1 ]] && java_major=$(echo "$java_version" | cut -d. -f2) # 1.8 -> 8
[[ $java_major =~ ^[0-9]+$ && $java_major -ge 17 ]] ||
	die "java is version '${java_version:-unknown}'; Kafka 4.x needs Java 17 or newer"
command -v mvn >/dev/null 2>&1 ||
	die "mvn not found: Maven fetches the Kafka jars from Maven Central (Debian: apt-get install maven)"

# --- Debian packages -------------------------------------------------------
# command -> package; each is checked by its command so a binary installed some
# other way counts too.
declare -A debs=(
	[prometheus-alertmanager]=prometheus-alertmanager
	[kcat]=kcat
	[docker-compose]=docker-compose
	[promtool]=prometheus
	[chromium]=chromium
)
missing=()
for cmd in "${!debs[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		# Alertmanager installed from upstream is called `alertmanager`.
		[[ $cmd == prometheus-alertmanager ]] && command -v alertmanager >/dev/null 2>&1 && continue
		missing+=("${debs[$cmd]}")
	fi
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps.sh: missing: ${missing[*]}. Install them with:" >&2
		echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
	echo "deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Kafka jars ------------------------------------------------------------
pom=tools/kafka/pom.xml
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
[[ -n $kafka_version ]] || die "no <kafka.version> in $pom"
home="${INVMON_CACHE:-$HOME/.cache/invmon}/kafka-$kafka_version"
# The marker holds the pom's hash: editing the pom (another log4j, say) fetches
# again, and a download that died half-way never counts as complete.
want=$(sha256sum "$pom" | cut -d' ' -f1)
if [[ -f $home/.complete && $(cat "$home/.complete") == "$want" ]]; then
	echo "deps.sh: Kafka $kafka_version jars present in $home/libs"
else
	echo "deps.sh: fetching Kafka $kafka_version jars into $home/libs"
	rm -rf "$home/libs" "$home/.complete" "$home/cds"
	mkdir -p "$home"
	mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$home/libs" ||
		die "mvn could not fetch the Kafka jars (see above)"
	[[ -f $home/libs/kafka_2.13-$kafka_version.jar ]] || die "mvn ran but $home/libs has no kafka_2.13-$kafka_version.jar"
	echo "$want" >"$home/.complete"
fi
# --- Apicurio Registry (the Schema Registry of the tests and the dev stack) --
# One archive from Maven Central, unpacked next to the Kafka jars; .complete
# is written only after the unzip finished. 3.0.x runs on Java 17.
apicurio_version=3.0.9
apicurio="${INVMON_CACHE:-$HOME/.cache/invmon}/apicurio-$apicurio_version"
if [[ -f $apicurio/.complete ]]; then
	echo "deps.sh: Apicurio Registry $apicurio_version present in $apicurio"
else
	command -v unzip >/dev/null 2>&1 || die "unzip not found: it unpacks Apicurio Registry (Debian: apt-get install unzip)"
	echo "deps.sh: fetching Apicurio Registry $apicurio_version into $apicurio"
	rm -rf "$apicurio"
	mkdir -p "$apicurio/dl"
	mvn -q -B -Dstyle.color=never dependency:copy \
		-Dartifact="io.apicurio:apicurio-registry-app:$apicurio_version:zip:all" -DoutputDirectory="$apicurio/dl" ||
		die "mvn could not fetch Apicurio Registry (see above)"
	unzip -q -o "$apicurio/dl/apicurio-registry-app-$apicurio_version-all.zip" -d "$apicurio" ||
		die "could not unpack Apicurio Registry"
	rm -rf "$apicurio/dl"
	[[ -f $apicurio/apicurio-registry-app-$apicurio_version-runner.jar ]] ||
		die "the Apicurio archive has no apicurio-registry-app-$apicurio_version-runner.jar"
	echo "$apicurio_version" >"$apicurio/.complete"
fi
echo "deps.sh: ok"
