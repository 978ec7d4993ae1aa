// Package kafkatest is the test harness for code that talks to Kafka and
// Alertmanager. It runs the real peers, not mocks: an Apache Kafka broker
// (single-node KRaft, started with the machine's Java 17 from jars that
// scripts/deps.sh fetches from Maven Central), Debian's prometheus-alertmanager,
// the kcat producer, and franz-go's in-process kfake for unit tests that do not
// need a real broker.
//
// SecureKafka runs a second broker whose client listeners require
// authentication (SASL_SSL with SCRAM, PLAIN and OAUTHBEARER, and TLS with a
// required client certificate), with certificates from a test CA (NewCA).
// StartAlertmanagerWith runs Alertmanager behind TLS, client certificates
// and basic auth through its own --web.config.file. StartSchemaRegistry runs
// Apicurio Registry (the Confluent-compatible API at /apis/ccompat/v7, H2
// storage on disk so its schemas survive Stop and Start) on the same Java.
//
// A package whose tests use Kafka, SecureKafka or StartAlertmanager calls Main from its
// TestMain, so that the peers are stopped when the test binary ends:
//
//	func TestMain(m *testing.M) { kafkatest.Main(m) }
//
// or, with a goroutine-leak check that runs after the peers are stopped:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(kafkatest.Wrap(m)) }
//
// Every process is started on free loopback ports (never Kafka's or
// Alertmanager's well-known ones), in its own process group, and is killed with
// the test binary even when the binary dies without running its cleanups.
//
// Environment:
//
//   - KAFKA_BROKERS: when set, Kafka returns it instead of starting a broker,
//     so the same tests run against an existing cluster. StartKafka always
//     starts a broker of its own, since its callers stop and restart it, and
//     so does SecureKafka, whose callers need the cluster's CA and
//     credentials.
//   - CI=true: a missing Java, Kafka jar cache, Apicurio archive, Alertmanager or kcat fails the
//     test with the reason. Otherwise such a test is skipped, and the skip
//     message says that `make test` installs what is missing.
//   - INVMON_CACHE: where scripts/deps.sh put the Kafka jars; default
//     $HOME/.cache/invmon. The jars are in INVMON_CACHE/kafka-<KafkaVersion>/libs,
//     Apicurio Registry in INVMON_CACHE/apicurio-<ApicurioVersion>.
//   - JAVA_HOME: when set, its bin/java runs the broker; otherwise java on PATH.
package kafkatest
