package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
  sasl: {mechanism: PLAIN, username: u, password: "${INVMON_TEST_PASSWORD}"}
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
