package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "monitor.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadExpandsEnvironmentInValuesOnly(t *testing.T) {
	t.Setenv("INVMON_TEST_PASSWORD", "s3cret")
	cfg, err := Load(write(t, `# set ${UNSET_IN_A_COMMENT} before starting
kafka:
  brokers: ["k1:9092"]
  sasl: {mechanism: SCRAM-SHA-256, username: u, password: "${INVMON_TEST_PASSWORD}"}
rule_files: ["rules/*.yaml"]
alertmanager: {resend_interval: 30s}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kafka.SASL.Password != "s3cret" || cfg.Kafka.Group != "invmon" || cfg.Alertmanager.ResendInterval != 30*time.Second {
		t.Fatalf("config %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRejectsUnknownFieldsAndUnsetVariables(t *testing.T) {
	if _, err := Load(write(t, "kafka:\n  brokerz: [a]\n")); err == nil || !strings.Contains(err.Error(), "brokerz") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := Load(write(t, "state_dir: ${INVMON_SURELY_UNSET}\n")); err == nil || !strings.Contains(err.Error(), "INVMON_SURELY_UNSET") {
		t.Fatalf("unset variable: %v", err)
	}
}

func TestKafkaSecurityValidation(t *testing.T) {
	base := "kafka:\n  brokers: [k:9093]\n"
	for _, c := range []struct {
		name, yaml, want string // want "" means valid
	}{
		{"scram over tls with a password file", "  tls: {enabled: true, ca_file: /ca.pem, server_name: kafka}\n  sasl: {mechanism: SCRAM-SHA-512, username: u, password_file: /pw}\n", ""},
		{"plain without tls", "  sasl: {mechanism: PLAIN, username: u, password: p}\n", "PLAIN sends the password in clear text"},
		{"plain without tls, allowed", "  sasl: {mechanism: PLAIN, username: u, password: p, allow_plain_without_tls: true}\n", ""},
		{"plain over tls", "  tls: {enabled: true}\n  sasl: {mechanism: PLAIN, username: u, password_file: /pw}\n", ""},
		{"scram without tls is allowed", "  sasl: {mechanism: SCRAM-SHA-256, username: u, password: p}\n", ""},
		{"password twice", "  sasl: {mechanism: SCRAM-SHA-256, username: u, password: p, password_file: /pw}\n", "kafka.sasl.password and kafka.sasl.password_file are both set"},
		{"no password", "  sasl: {mechanism: SCRAM-SHA-256, username: u}\n", "needs kafka.sasl.password or password_file"},
		{"credentials without mechanism", "  sasl: {username: u, password_file: /pw}\n", "no mechanism"},
		{"unknown mechanism", "  sasl: {mechanism: GSSAPI}\n", "is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, AWS_MSK_IAM"},
		{"tls settings while off", "  tls: {ca_file: /ca.pem}\n", "kafka.tls.enabled is false"},
		{"client cert without key", "  tls: {enabled: true, cert_file: /c.pem}\n", "kafka.tls"},
		{"oauth token file", "  sasl: {mechanism: OAUTHBEARER, oauth: {token_file: /t}}\n", ""},
		{"oauth client credentials", "  sasl: {mechanism: OAUTHBEARER, oauth: {token_url: 'https://idp/token', client_id: c, client_secret_file: /s, scopes: [kafka], extensions: {logicalCluster: lkc-1}}}\n", ""},
		{"oauth both sources", "  sasl: {mechanism: OAUTHBEARER, oauth: {token_file: /t, token_url: 'https://idp/token'}}\n", "exactly one of"},
		{"oauth no secret", "  sasl: {mechanism: OAUTHBEARER, oauth: {token_url: 'https://idp/token', client_id: c}}\n", "client_secret or client_secret_file"},
		{"msk iam default chain", "  tls: {enabled: true}\n  sasl: {mechanism: AWS_MSK_IAM}\n", ""},
		{"msk iam static", "  tls: {enabled: true}\n  sasl: {mechanism: AWS_MSK_IAM, aws: {access_key_id: AKIA, secret_access_key_file: /k}}\n", ""},
		{"msk iam half static", "  tls: {enabled: true}\n  sasl: {mechanism: AWS_MSK_IAM, aws: {access_key_id: AKIA}}\n", "go together"},
		{"msk iam without tls", "  sasl: {mechanism: AWS_MSK_IAM}\n", "needs kafka.tls.enabled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(write(t, base+c.yaml+"rule_files: [r.yaml]\n"))
			if err == nil {
				err = cfg.Validate()
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestSecretsStayOutOfErrors: a secret typed where it does not belong, or
// under a misspelt key, is rejected without its value in the message.
func TestSecretsStayOutOfErrors(t *testing.T) {
	const secret = "hunter2-correct-horse"
	t.Setenv("INVMON_TEST_SECRET", secret)
	for _, body := range []string{
		"kafka:\n  sasl: " + secret + "\n",
		"kafka:\n  sasl: ${INVMON_TEST_SECRET}\n",
		"kafka:\n  sasl: {mechanism: PLAIN, password: {value: " + secret + "}}\n",
		"kafka:\n  tls: [" + secret + "]\n",
		"alertmanager:\n  resend_interval: " + secret + "\n",
		"kafka:\n  brokers: [k:9092]\n  sasl: {mechanism: " + secret + "}\n",
		"alertmanager:\n  basic_auth: " + secret + "\n",
		"alertmanager:\n  basic_auth: {username: u, password: [" + secret + "]}\n",
		"alertmanager:\n  authorization: {credentials: {x: " + secret + "}}\n",
		"alertmanager:\n  basic_auth: {username: u, password: a, password_file: /p}\n  urls: [https://" + secret + "]\n",
		"alertmanager:\n  scheme: " + secret + "\n",
		"privacy:\n  identifiers: " + secret + "\n",
		"privacy:\n  hmac_key_file: [" + secret + "]\n",
		"http:\n  web_config_file: [" + secret + "]\n",
	} {
		cfg, err := Load(write(t, body+"rule_files: [r.yaml]\n"))
		if err == nil {
			cfg.Kafka.Brokers = []string{"k:9092"}
			err = cfg.Validate()
		}
		if err == nil {
			t.Errorf("%q accepted", body)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the value: %v", err)
		}
	}
}

// TestHardenedExampleLoads keeps deploy/monitor-hardened.yaml valid and
// hardened: Kafka over TLS with SCRAM, the password from a file.
func TestHardenedExampleLoads(t *testing.T) {
	cfg, err := Load("../../deploy/monitor-hardened.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	k := cfg.Kafka
	if !k.TLS.Enabled || k.TLS.Config.CAFile == "" || k.TLS.Config.InsecureSkipVerify {
		t.Errorf("kafka.tls %+v: want TLS verified against a CA file", k.TLS)
	}
	if k.SASL.Mechanism != "SCRAM-SHA-512" || k.SASL.PasswordFile == "" || k.SASL.Password != "" {
		t.Errorf("kafka.sasl: want SCRAM-SHA-512 with the password from a file, got mechanism %q", k.SASL.Mechanism)
	}
	if cfg.HTTP.WebConfigFile == "" {
		t.Error("http.web_config_file: want a web configuration")
	}
	am := cfg.Alertmanager
	for _, u := range am.Targets() {
		if !strings.HasPrefix(u, "https://") {
			t.Errorf("alertmanager target %s: want https", u)
		}
	}
	if len(am.Targets()) == 0 || am.AllowCredentialsOverHTTP || am.HTTP.TLSConfig.CAFile == "" || am.HTTP.TLSConfig.InsecureSkipVerify ||
		am.HTTP.BasicAuth == nil || am.HTTP.BasicAuth.PasswordFile == "" || am.HTTP.BasicAuth.Password != "" {
		t.Errorf("alertmanager: want https targets verified against a CA, basic auth with the password from a file")
	}
	if cfg.Privacy.Identifiers != "hmac" || cfg.Privacy.HMACKeyFile == "" || len(cfg.Privacy.ImpactBands) == 0 {
		t.Errorf("privacy %+v: want hmac identifiers and impact bands", cfg.Privacy)
	}
}

func TestSchemaRegistryHTTPClientSettings(t *testing.T) {
	p := write(t, `kafka: {brokers: [k:9092]}
rule_files: [r.yaml]
schema_registry:
  urls: [https://registry.example.com/apis/ccompat/v7]
  basic_auth: {username: invmon, password_file: registry.pw}
  tls_config: {ca_file: ca.pem}
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	sr := cfg.SchemaRegistry
	dir := filepath.Dir(p)
	if len(sr.URLs) != 1 || sr.HTTP.BasicAuth == nil || sr.HTTP.BasicAuth.Username != "invmon" ||
		sr.HTTP.BasicAuth.PasswordFile != filepath.Join(dir, "registry.pw") || sr.HTTP.TLSConfig.CAFile != filepath.Join(dir, "ca.pem") {
		t.Fatalf("schema_registry %+v; want the URL, basic auth and *_file paths relative to the config file", sr)
	}
	if !sr.HTTP.FollowRedirects {
		t.Error("an unset follow_redirects must keep Prometheus's default (true)")
	}
	// Two kinds of credentials at once is Prometheus's own validation error.
	_, err = Load(write(t, `schema_registry:
  urls: [http://r]
  basic_auth: {username: u, password: p}
  authorization: {credentials: t}
`))
	if err == nil || !strings.Contains(err.Error(), "schema_registry") {
		t.Fatalf("basic_auth and authorization together: %v", err)
	}
}

// kafka.violations_topic was renamed kafka.violation_events_topic, so that
// it cannot be taken for the internal <group>.violations-state: the former
// name keeps working in files and as a flag, and a file that gives both
// names different topics is refused.
func TestViolationEventsTopicFormerNameStillWorks(t *testing.T) {
	cfg, err := Load(write(t, "kafka: {brokers: [k], violations_topic: repairs}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kafka.ViolationEventsTopic != "repairs" || cfg.Kafka.ViolationsTopic != "" {
		t.Fatalf("violations_topic read as events topic %q (former field %q)", cfg.Kafka.ViolationEventsTopic, cfg.Kafka.ViolationsTopic)
	}
	if _, err := Load(write(t, "kafka: {brokers: [k], violations_topic: a, violation_events_topic: b}\n")); err == nil ||
		!strings.Contains(err.Error(), "former name of kafka.violation_events_topic") {
		t.Fatalf("both names with different topics: %v", err)
	}
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	flagCfg := Defaults()
	BindFlags(fs, &flagCfg)
	if err := fs.Parse([]string{"--kafka.violations-topic", "old-flag"}); err != nil {
		t.Fatal(err)
	}
	got, err := FromFileAndFlags(write(t, "kafka: {brokers: [k], violation_events_topic: from-file}\n"), fs, flagCfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kafka.ViolationEventsTopic != "old-flag" {
		t.Fatalf("--kafka.violations-topic gave %q, want it to set the events topic over the file", got.Kafka.ViolationEventsTopic)
	}
}

func TestMaxPollRecordsIsReadAndBounded(t *testing.T) {
	if got := Defaults().Kafka.MaxPollRecords; got != 20_000 {
		t.Fatalf("default kafka.max_poll_records %d, want 20000", got)
	}
	cfg, err := Load(write(t, "kafka:\n  brokers: [k:9092]\n  max_poll_records: 5000\nrule_files: [r.yaml]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kafka.MaxPollRecords != 5000 {
		t.Fatalf("kafka.max_poll_records read as %d, want 5000", cfg.Kafka.MaxPollRecords)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{-1, MaxPollRecordsLimit + 1} {
		cfg.Kafka.MaxPollRecords = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "kafka.max_poll_records") {
			t.Fatalf("max_poll_records %d: %v", bad, err)
		}
	}
}
