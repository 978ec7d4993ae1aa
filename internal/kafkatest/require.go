package kafkatest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// KafkaVersion is the Apache Kafka release the harness runs. It must equal
// kafka.version in tools/kafka/pom.xml (TestPomVersion checks this), because
// both sides derive the jar cache directory from it.
const KafkaVersion = "4.1.2"

// minJavaMajor is the oldest Java that Kafka 4.x brokers run on.
const minJavaMajor = 17

// unavailable reports that a peer the test needs is not installed. Under CI the
// test fails, since a skipped integration test would hide a broken install step;
// on a developer's machine it is skipped with a pointer to the command that
// installs everything.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("kafkatest: %s (CI=true: a missing test dependency fails the run)", reason)
	}
	t.Skipf("kafkatest: %s; run `make test`, which installs it (scripts/deps.sh)", reason)
}

// cacheDir is where scripts/deps.sh keeps downloaded jars; it must agree with
// the default in that script.
func cacheDir() string {
	if d := os.Getenv("INVMON_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "invmon-cache")
	}
	return filepath.Join(home, ".cache", "invmon")
}

// kafkaHome is the cache directory of this Kafka version: libs/ holds the jars,
// .complete marks a finished download (written by scripts/deps.sh only after
// mvn succeeded, so a half-copied directory is never used), cds/ holds class
// data sharing archives that make the JVM start faster.
func kafkaHome() string { return filepath.Join(cacheDir(), "kafka-"+KafkaVersion) }

// javaInstall is what the broker needs from the machine, found once per binary.
type javaInstall struct {
	java    string // path of the java executable
	version string // e.g. "17.0.15", names the CDS archive
	libs    string // directory of the Kafka jars
	problem string // non-empty when something is missing; says what
}

var (
	javaOnce  sync.Once
	javaFound javaInstall
)

// requireKafka returns the Java and jars to run a broker with, or skips/fails
// the test (see unavailable) saying exactly what is missing.
func requireKafka(t testing.TB) javaInstall {
	t.Helper()
	javaOnce.Do(func() { javaFound = findJava() })
	if javaFound.problem != "" {
		unavailable(t, "%s", javaFound.problem)
	}
	return javaFound
}

func findJava() javaInstall {
	var in javaInstall
	java := "java"
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java = filepath.Join(home, "bin", "java")
	}
	path, err := exec.LookPath(java)
	if err != nil {
		in.problem = fmt.Sprintf("no Java found to run the Kafka broker (%v); Java %d or newer is needed", err, minJavaMajor)
		return in
	}
	in.java = path
	// `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` on stderr.
	out, err := exec.Command(path, "-version").CombinedOutput()
	if err != nil {
		in.problem = fmt.Sprintf("%s -version failed: %v: %s", path, err, bytes.TrimSpace(out))
		return in
	}
	in.version = parseJavaVersion(string(out))
	if major := javaMajor(in.version); major < minJavaMajor {
		in.problem = fmt.Sprintf("%s is Java %q; Kafka %s needs Java %d or newer", path, in.version, KafkaVersion, minJavaMajor)
		return in
	}
	in.libs = filepath.Join(kafkaHome(), "libs")
	jar := filepath.Join(in.libs, "kafka_2.13-"+KafkaVersion+".jar")
	if _, err := os.Stat(filepath.Join(kafkaHome(), ".complete")); err != nil {
		in.problem = fmt.Sprintf("the Kafka %s jars are not in %s (no .complete marker beside it)", KafkaVersion, in.libs)
		return in
	}
	if _, err := os.Stat(jar); err != nil {
		in.problem = fmt.Sprintf("the Kafka jar cache %s is incomplete: %v", in.libs, err)
	}
	return in
}

// parseJavaVersion returns the quoted version from `java -version` output.
func parseJavaVersion(out string) string {
	_, rest, ok := strings.Cut(out, `version "`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// javaMajor maps "17.0.15" to 17 and the pre-9 form "1.8.0_392" to 8.
func javaMajor(version string) int {
	parts := strings.Split(version, ".")
	if len(parts) > 1 && parts[0] == "1" {
		parts = parts[1:]
	}
	major, _ := strconv.Atoi(strings.TrimSuffix(strings.SplitN(parts[0], "-", 2)[0], "+"))
	return major
}

// lookBinary returns the first candidate that exists, or skips/fails the test.
// Absolute candidates are checked as they are; others are looked up on PATH.
func lookBinary(t testing.TB, what, pkg string, candidates ...string) string {
	t.Helper()
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	unavailable(t, "%s not found (looked for %s); Debian package %s", what, strings.Join(candidates, ", "), pkg)
	return ""
}
